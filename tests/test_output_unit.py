"""Live output, pure parts: a viewer's bound, the follower's reading of a file that grows,
is capped or runs ahead, and the line printer of ``getstatus --follow``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from audience.following import MAX_LINE_BYTES, Lines
from conductor.output import OutputHub, Piece, Viewer
from conductor.states import TaskState
from conductor.store import Change
from orchestra.wire import audience_pb2, player_pb2
from player import follow


def test_a_viewer_holds_at_most_its_limit_and_says_what_it_missed() -> None:
    viewer = Viewer("j", None, limit=10)
    assert viewer.offer(Piece("h", "stdout", b"123456"))
    assert not viewer.offer(Piece("h", "stdout", b"abcdef"))  # 12 > 10: dropped, counted
    assert not viewer.offer(Piece("h", "stdout", b"ghijkl", skipped=4))
    taken = asyncio.run(viewer.pieces())
    assert taken == [Piece("h", "stdout", b"123456"), Piece("h", "stdout", b"", skipped=16)]
    # Room again: the next piece that fits carries nothing missed (it was said).
    assert viewer.offer(Piece("h", "stdout", b"x"))
    assert viewer.take() == [Piece("h", "stdout", b"x")]


def test_what_a_viewer_missed_goes_with_the_next_piece_of_that_stream() -> None:
    viewer = Viewer("j", None, limit=4)
    viewer.offer(Piece("h", "stdout", b"1234"))
    viewer.offer(Piece("h", "stdout", b"5678", cut=True))
    assert viewer.take() == [Piece("h", "stdout", b"1234"), Piece("h", "stdout", b"", skipped=4, cut=True)]
    viewer.offer(Piece("h", "stderr", b"abcde"))  # larger than the whole limit
    viewer.offer(Piece("h", "stderr", b"f"))
    assert viewer.take() == [Piece("h", "stderr", b"f", skipped=5)]


def test_a_closed_viewer_returns_nothing() -> None:
    viewer = Viewer("j", "p1")
    assert viewer.wants("p1") and not viewer.wants("p2")
    viewer.close()
    assert asyncio.run(viewer.pieces()) == []


def test_a_source_begins_near_the_end_and_follows_growth(tmp_path: Path) -> None:
    path = tmp_path / "stdout"
    path.write_bytes(b"a" * (follow.START_TAIL + 100))
    source = follow._Source(path, player_pb2.OUTPUT_STREAM_STDOUT)
    assert source.read() == b"a" * follow.START_TAIL and source.skipped == 100
    assert source.read() == b""
    with path.open("ab") as out:
        out.write(b"more\n")
    assert source.read() == b"more\n"
    source.close()


def test_a_source_notices_the_cap_and_skips_when_far_behind(tmp_path: Path) -> None:
    path = tmp_path / "stdout"
    path.write_bytes(b"x" * 100)
    source = follow._Source(path, player_pb2.OUTPUT_STREAM_STDOUT)
    assert source.read() == b"x" * 100
    path.write_bytes(b"y" * 10)  # the player's cap emptied it, then the score went on
    assert source.read() == b"y" * 10 and source.cut
    source.cut = False
    with path.open("ab") as out:
        out.write(b"z" * (follow.MAX_BEHIND + 5000))
    data = source.read()
    assert data == b"z" * follow.CHUNK_BYTES
    assert source.skipped == follow.MAX_BEHIND + 5000 - follow.CHUNK_BYTES
    source.close()


def test_the_follower_sends_everything_then_stops_at_the_end(tmp_path: Path) -> None:
    (tmp_path / "stdout").write_bytes(b"one\ntwo\n")
    (tmp_path / "stderr").write_bytes(b"oops\n")
    sent: list[player_pb2.OutputChunk] = []

    async def run() -> None:
        ended = asyncio.Event()
        ended.set()
        window = follow.Window()
        await follow.follow("t", 1, tmp_path, ended, window, sent.append)
        assert window.pending == len(b"one\ntwo\noops\n")  # queued, never written here

    asyncio.run(run())
    assert [(c.stream, c.data) for c in sent] == [(player_pb2.OUTPUT_STREAM_STDOUT, b"one\ntwo\n"),
                                                 (player_pb2.OUTPUT_STREAM_STDERR, b"oops\n")]


def test_a_full_window_holds_the_follower_back(tmp_path: Path) -> None:
    (tmp_path / "stdout").write_bytes(b"")
    sent: list[player_pb2.OutputChunk] = []

    async def run() -> None:
        window = follow.Window(limit=follow.CHUNK_BYTES)
        ended = asyncio.Event()
        task = asyncio.ensure_future(follow.follow("t", 1, tmp_path, ended, window, sent.append))
        await asyncio.sleep(0.2)
        (tmp_path / "stdout").write_bytes(b"z" * (3 * follow.CHUNK_BYTES))
        await asyncio.sleep(0.3)
        assert len(sent) == 1 and not window.room.is_set()  # nothing more until it was written
        window.written(follow.CHUNK_BYTES)
        await asyncio.sleep(0.3)
        assert len(sent) == 2
        task.cancel()

    asyncio.run(run())


def output(host: str, data: bytes, stream: str = "stdout", skipped: int = 0) -> audience_pb2.FollowEvent:
    return audience_pb2.FollowEvent(output=audience_pb2.OutputPiece(host=host, stream=stream, data=data,
                                                                    skipped=skipped))


def test_lines_are_put_together_per_host_and_stream() -> None:
    out: list[str] = []
    err: list[str] = []
    lines = Lines(False, out.append, err.append)
    lines.event(output("a", b"hel"))
    lines.event(output("b", b"other\nhalf"))
    lines.event(output("a", b"lo\nwor"))
    lines.event(output("a", b"oops\n", "stderr"))
    lines.event(output("a", b"ld\n\xe2\x82"))
    lines.event(output("a", b"\xac\n", skipped=0))
    lines.event(output("b", b"new", skipped=7))
    lines.event(audience_pb2.FollowEvent(task=audience_pb2.TaskMoved(host="a", state="ok")))
    lines.finish()
    assert out == ["b: other\n", "a: hello\n", "a: world\n", "a: \u20ac\n", "b: half\n",
                   "b: [… 7 bytes skipped …]\n", "a: [ok]\n", "b: new\n"]
    assert err == ["a: oops\n"]


def test_a_line_without_end_is_printed_once_it_is_too_long() -> None:
    out: list[str] = []
    lines = Lines(False, out.append, out.append)
    lines.event(output("a", b"x" * (MAX_LINE_BYTES + 1)))
    assert out == ["a: " + "x" * (MAX_LINE_BYTES + 1) + "\n"]


class _Session:
    def __init__(self) -> None:
        self.sent: list[player_pb2.ConductorMessage] = []

    def send(self, **body: object) -> None:
        self.sent.append(player_pb2.ConductorMessage(**body))  # type: ignore[arg-type]


class _Sessions:
    def __init__(self) -> None:
        self.by_name = {"p1": _Session()}

    def get(self, name: str | None) -> _Session | None:
        return self.by_name.get(name or "")


class _Store:
    def __init__(self, tasks: list[SimpleNamespace], delay: float = 0.0) -> None:
        self.tasks, self.delay = tasks, delay

    async def get_job(self, job_id: str) -> SimpleNamespace:
        await asyncio.sleep(self.delay)
        return SimpleNamespace(tasks=self.tasks)


def _hub(tasks: list[SimpleNamespace], delay: float = 0.0) -> tuple[OutputHub, _Session]:
    sessions = _Sessions()
    return OutputHub(_Store(tasks, delay), sessions), sessions.by_name["p1"]  # type: ignore[arg-type]


def _running(state: TaskState = TaskState.RUNNING) -> SimpleNamespace:
    return SimpleNamespace(task_id="j.0", player="p1", attempt=1, state=state)


def test_a_follower_that_leaves_while_the_hub_reads_the_job_is_not_left_open() -> None:
    hub, _ = _hub([_running()], delay=0.5)

    async def run() -> None:
        opening = asyncio.ensure_future(hub.open("j"))
        await asyncio.sleep(0.05)
        opening.cancel()
        await asyncio.gather(opening, return_exceptions=True)

    asyncio.run(run())
    assert hub.open_viewers == 0 and not hub._viewers and not hub._watched


def test_a_task_being_cancelled_is_watched_and_its_end_tells_the_player_to_stop() -> None:
    hub, session = _hub([_running(TaskState.CANCELLING)])

    async def run() -> Viewer:
        return await hub.open("j", "p1")

    viewer = asyncio.run(run())
    assert [m.watch.on for m in session.sent] == [True]
    hub.chunk("p1", player_pb2.OutputChunk(task_id="j.0", attempt=1, stream=player_pb2.OUTPUT_STREAM_STDOUT,
                                           data=b"cleaning up\n", offset=0))
    hub.moved(Change(applied=True, job_id="j", state=TaskState.CANCELLED, task_id="j.0", player="p1", attempt=1))
    assert [m.watch.on for m in session.sent] == [True, False]  # ended: the player stops at once
    # Only the latest move of a host waits for the reader (cancelling was overtaken).
    assert viewer.take() == [Piece("p1", "stdout", b"cleaning up\n"), Piece("p1", state="cancelled")]


def test_task_moves_waiting_for_a_reader_are_bounded_by_the_hosts() -> None:
    viewer = Viewer("j", None)
    for n in range(10_000):
        viewer.offer(Piece(f"h{n % 3}", state="queued" if n % 2 else "running"))
    assert len(viewer.take()) == 3


def test_after_a_reconnect_the_player_resumes_where_the_last_chunks_ended() -> None:
    hub, session = _hub([_running()])
    asyncio.run(hub.open("j"))
    hub.chunk("p1", player_pb2.OutputChunk(task_id="j.0", attempt=1, stream=player_pb2.OUTPUT_STREAM_STDOUT,
                                           data=b"12345", offset=100))
    hub.reconnected("p1")
    resumed = session.sent[-1].watch
    assert resumed.on and resumed.resume and resumed.stdout_from == 105 and resumed.stderr_from == 0


def test_a_resumed_source_starts_where_it_was_told(tmp_path: Path) -> None:
    path = tmp_path / "stdout"
    path.write_bytes(b"a" * 100 + b"new")
    source = follow._Source(path, player_pb2.OUTPUT_STREAM_STDOUT, start=100)
    assert source.read() == b"new" and source.skipped == 0
    source.close()
    shrunk = follow._Source(path, player_pb2.OUTPUT_STREAM_STDOUT, start=10_000)  # the cap emptied it
    assert shrunk.read() == b"a" * 100 + b"new" and shrunk.cut
    shrunk.close()


def test_what_a_score_printed_is_shown_never_obeyed_by_the_terminal() -> None:
    out: list[str] = []
    Lines(False, out.append, out.append).event(output("a", b"\x1b[2Jgone\x1b]0;title\x07\n"))
    assert out == ["a: \\x1b[2Jgone\\x1b]0;title\\x07\n"]
    exact: list[str] = []
    Lines(True, exact.append, exact.append).event(output("a", b"\x1b[2J\n"))
    assert exact == ['{"host": "a", "stream": "stdout", "line": "\\u001b[2J"}\n']
