"""Reconciling a player whose spool holds more than one message can carry.

A Hello lists the spool without results, and each finished result follows it in a
message of its own: however many results piled up while the conductor was away, the
player gets back in, every result is acknowledged and every job ends as it really did.
"""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Any

import grpc

from audience.client import Client
from conductor import reconcile
from conductor.reconcile import Action
from conductor.states import TaskState
from conductor.store import TaskRecord
from devtools.devcluster import CONDUCTOR_NAME, Cluster
from orchestra.config import PlayerConfig, TLSFiles, load_audience
from orchestra.inventory import PROTOCOL_VERSION
from orchestra.outcome import TaskOutcome
from orchestra.tls import MAX_MESSAGE_BYTES
from orchestra.wire import audience_pb2, player_pb2, player_pb2_grpc
from player import session as player_session
from player.session import Player, fit_result
from tests.conftest import MakeCluster, queue_rows, read_rows
from tests.faults.helpers import assert_queue_invariants, runs

JOBS = 60
TAIL = 65536  # the player's default output_tail_bytes and response_max_bytes

# Waits for GO, then prints more than a tail of stdout and of stderr and fills its
# response: one result of about 200 KB, sixty of them about 12 MB.
BIG_SCORE = """#!/bin/sh
echo "$ORC_TASK_ID $ORC_PLAYER" >> {marker}
while [ ! -e {go} ]; do sleep 0.3; done
yes "$ORC_TASK_ID stdout" | head -c 100000
yes "$ORC_TASK_ID stderr" | head -c 100000 >&2
awk 'BEGIN {{ for (i = 0; i < 3000; i++) printf "k%d=vvvvvvvvvvvvvvvvvvvvvvvv\\n", i }}' > "$ORC_RESPONSE_FILE"
exit "$ORC_CODE"
"""
BIG_CONF = "interface env\nparam CODE required pattern=[0-9]\n"


def submit_many(cluster: Cluster, count: int) -> dict[str, int]:
    """Submit count one-task jobs to p1.test in one process; job id -> its exit code."""
    client = Client(load_audience(cluster.audience_config, explicit=True))
    try:
        jobs = {}
        for number in range(count):
            code = 3 if number % 3 == 0 else 0
            reply = client.submit(audience_pb2.SubmitRequest(
                score="big", scope=audience_pb2.SCOPE_ALL_OF, targets=["p1.test"],
                params={"code": str(code)}))
            jobs[reply.job_id] = code
        return jobs
    finally:
        client.close()


def spool_steps(cluster: Cluster, name: str) -> list[str]:
    return [str(row["step"]) for row in read_rows(cluster.player_dir(name) / "spool" / "spool.db", "spool")]


def test_results_too_many_for_one_message_are_all_reconciled(make_cluster: MakeCluster,
                                                              tmp_path: Path) -> None:
    marker, go = tmp_path / "marker", tmp_path / "go"
    cluster = make_cluster(start=False, player_settings={
        "max_concurrent": JOBS, "output_tail_bytes": TAIL, "response_max_bytes": TAIL})
    cluster.add_score("big", BIG_SCORE.format(marker=marker, go=go), BIG_CONF)
    cluster.start()
    jobs = submit_many(cluster, JOBS)
    cluster.wait_for(lambda: len(runs(marker)) == JOBS, "every score started", timeout=90)

    # The conductor goes away; meanwhile every score finishes and its result is spooled.
    cluster.conductor().stop()
    go.touch()
    cluster.wait_for(lambda: spool_steps(cluster, "p1.test").count("finished") == JOBS,
                     "every result spooled", timeout=90)
    results = [player_pb2.TaskResult.FromString(row["result"])  # type: ignore[arg-type]
               for row in read_rows(cluster.player_dir("p1.test") / "spool" / "spool.db", "spool")]
    assert sum(result.ByteSize() for result in results) > MAX_MESSAGE_BYTES  # what locked it out

    cluster.start_conductor()
    cluster.wait_for(lambda: all(row["state"] not in ("queued", "dispatched", "running")
                                 for row in queue_rows(cluster, "tasks")),
                     "every job ended", timeout=90)
    cluster.wait_for(lambda: set(spool_steps(cluster, "p1.test")) == {"acked"},
                     "every result acknowledged", timeout=30)

    tasks = {str(row["job_id"]): row for row in queue_rows(cluster, "tasks")}
    assert set(tasks) == set(jobs)
    for job_id, code in jobs.items():
        task = tasks[job_id]
        assert task["state"] == ("ok" if code == 0 else "failed"), task
        assert task["exit_code"] == code
        for stream in ("stdout", "stderr"):  # the whole tail, as the player kept it
            output = bytes(task[stream])  # type: ignore[call-overload]
            assert task[f"{stream}_truncated"] and TAIL <= len(output) < TAIL + 100
            assert f"{task['id']} {stream}\n".encode() in output
    assert_queue_invariants(cluster, marker, list(jobs))
    log = cluster.log_text("player-p1.test")
    assert "RESOURCE_EXHAUSTED" not in log
    assert "task_lost" not in cluster.log_text("conductor")


def test_a_player_of_the_previous_protocol_is_refused_with_both_versions_named(
        make_cluster: MakeCluster) -> None:
    """Protocol 2 embedded results in the Hello; such a player must not be half-understood."""
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    cluster.start(players=["p1.test"])

    async def hello_from_protocol_2() -> tuple[grpc.StatusCode, str]:
        credentials = grpc.ssl_channel_credentials(cluster.ssl.ca_cert.read_bytes(),
                                                   cluster.ssl.key("p2.test").read_bytes(),
                                                   cluster.ssl.cert("p2.test").read_bytes())
        options = [("grpc.ssl_target_name_override", CONDUCTOR_NAME)]
        async with grpc.aio.secure_channel(f"127.0.0.1:{cluster.port}", credentials, options=options) as channel:
            call = player_pb2_grpc.PlayerLinkStub(channel).Session()
            await call.write(player_pb2.PlayerMessage(hello=player_pb2.Hello(protocol_version=2)))
            try:
                await call.read()
            except grpc.aio.AioRpcError:
                pass
            return await call.code(), await call.details()
    code, details = asyncio.run(hello_from_protocol_2())
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"protocol version 2 is not supported; this conductor speaks {PROTOCOL_VERSION}" in details
    assert "upgrade the player or the conductor" in details
    assert "p2.test" not in cluster.connected()


# ---- the pieces, directly -------------------------------------------------------------

def player_config(tmp_path: Path) -> PlayerConfig:
    return PlayerConfig(
        path=tmp_path / "player.toml", conductor="localhost:1", conductor_name="conductor",
        scores_dir=tmp_path / "scores", spool_dir=tmp_path / "spool", max_concurrent=2,
        default_timeout=30, kill_grace=0.5, output_tail_bytes=64, max_output_bytes=1 << 20,
        response_max_bytes=1024, heartbeat_seconds=1, liveness_timeout=5,
        backoff_initial=0.1, backoff_max=1,
        tls=TLSFiles(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"))


def test_hello_lists_ten_thousand_results_in_well_under_a_megabyte(tmp_path: Path) -> None:
    big = TaskOutcome(exit_code=0, stdout=b"o" * 200_000, stderr=b"e" * 200_000).to_wire()

    async def main() -> tuple[player_pb2.PlayerMessage, list[player_pb2.TaskResult]]:
        (tmp_path / "scores").mkdir()
        material: Any = types.SimpleNamespace(certname="p1.test")
        player = Player(player_config(tmp_path), material)
        try:
            accepted = await asyncio.gather(*(player.spool.accept(player_pb2.RunTask(
                task_id=f"{number:032x}.0", attempt=1, job_id=f"{number:032x}", score="s"))
                for number in range(10_000)))
            assert all(entry is not None for entry in accepted)
            await asyncio.gather(*(player.spool.finish(player_pb2.TaskResult(
                task_id=f"{number:032x}.0", attempt=1, ending=player_pb2.ENDING_OK,
                outcome=big if number < 50 else None))
                for number in range(9_000)))
            return await player.hello()
        finally:
            await player.close()
    hello, results = asyncio.run(main())
    assert len(hello.hello.spool) == 10_000
    assert hello.ByteSize() < 1024 * 1024
    assert not any(entry.HasField("result") for entry in hello.hello.spool)
    states = [entry.state for entry in hello.hello.spool]
    assert states.count(player_pb2.SPOOL_STATE_FINISHED) == 9_000
    assert states.count(player_pb2.SPOOL_STATE_ACCEPTED) == 1_000
    # The results follow, one message each, in the order the Hello lists them.
    finished = [e.task_id for e in hello.hello.spool if e.state == player_pb2.SPOOL_STATE_FINISHED]
    assert [result.task_id for result in results] == finished


def test_a_result_too_large_for_a_message_is_cut_to_fit() -> None:
    huge = TaskOutcome(exit_code=1, stdout=b"o" * (6 << 20), stderr=b"e" * (6 << 20),
                       response={f"k{i}": "v" * 1000 for i in range(8000)}).to_wire()
    result = player_pb2.TaskResult(task_id="t.0", attempt=2, ending=player_pb2.ENDING_FAILED, outcome=huge)
    assert result.ByteSize() > MAX_MESSAGE_BYTES
    cut = fit_result(result)
    assert cut.ByteSize() <= player_session.RESULT_MAX_BYTES
    outcome = TaskOutcome.from_wire(cut.outcome)
    assert (cut.task_id, cut.attempt, cut.ending, outcome.exit_code) == ("t.0", 2, player_pb2.ENDING_FAILED, 1)
    assert outcome.stdout_truncated and outcome.stderr_truncated and outcome.response_truncated
    assert outcome.stdout.endswith(b"o" * 1000)
    small = player_pb2.TaskResult(task_id="s.0", attempt=1, outcome=TaskOutcome(stdout=b"x").to_wire())
    assert fit_result(small) is small


def task(task_id: str, state: TaskState) -> TaskRecord:
    return TaskRecord(task_id, task_id.split(".")[0], "p1", state, 1, (), None, TaskOutcome())


def test_a_finished_entry_without_its_result_waits_for_it_and_is_never_lost() -> None:
    spool = [player_pb2.SpoolEntry(task_id=f"{name}.0", attempt=1, state=player_pb2.SPOOL_STATE_FINISHED)
             for name in ("ran", "refused")]
    held = [task("ran.0", TaskState.RUNNING), task("refused.0", TaskState.DISPATCHED),
            task("gone.0", TaskState.RUNNING)]
    steps = reconcile.plan("p1", spool, {"ran.0": None, "refused.0": None}, held)
    assert [(s.action, s.task_id) for s in steps] == [
        (Action.AWAIT_RESULT, "ran.0"), (Action.AWAIT_RESULT, "refused.0"), (Action.LOSE, "gone.0")]
    assert all(step.result is None for step in steps)
