"""The commands under hostile or careless use: the original submitjob form with options,
canceljob's word on what is still running, output that cannot drive the terminal, a
closed output pipe, and bad daemon options.

Where a process boundary is crossed the commands run as real processes against a real
conductor; the escaping rule and the renderer are pure and checked with properties.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audience import listplayers, render
from devtools.devcluster import Cluster
from orchestra.cli import UNSAFE, visible
from orchestra.outcome import TaskOutcome
from orchestra.wire import audience_pb2, common_pb2
from tests.conftest import MakeCluster, job_json, submit

SCREEN_CLEAR = "\x1b[2J"
# A score whose every output channel tries to drive the terminal: clear the screen, set
# the window title (OSC ... BEL), return to the start of the line, reverse the text.
HOSTILE_SCORE = r"""#!/bin/sh
printf 'before\033[2Jafter\r\nline2\n'
printf 'title\033]0;pwned\007 \342\200\256esrever\n' >&2
printf 'colour=\033[31mred\n' > "$ORC_RESPONSE_FILE"
exit 3
"""


# ---- 17: the original form takes the modern options ----------------------------------

def test_original_form_with_options_before_and_after_runs_the_job(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"])
    code, out, err = submit(cluster, "--config", str(cluster.audience_config), "-all-of", "hello",
                            "p1.test", "p2.test", "!", "who", "legacy", "--wait", "--timeout", "30",
                            "--json")
    assert code == 0, err
    job = json.loads(out)
    assert job["scope"] == "all-of" and job["params"] == {"WHO": "legacy"}
    assert sorted(t["state"] for t in job["tasks"]) == ["ok", "ok"]


# ---- 18: canceljob says what it asked for ---------------------------------------------

def test_canceljob_without_wait_says_a_cancel_was_requested_and_what_still_runs(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    started = tmp_path / "started"
    # Ignores SIGTERM, so it is still being stopped (until SIGKILL after kill_grace) when
    # canceljob returns.
    cluster.add_score("stubborn", f"#!/bin/sh\ntrap '' TERM\ntouch {started}\nsleep 300\n",
                      "interface env\n")
    cluster.start(players=["p1.test"])  # p2 stays offline: its task is queued
    code, out, _ = submit(cluster, "--all-of", "stubborn", "p1.test", "p2.test")
    job_id = out.strip()
    cluster.wait_for(started.exists, "score running on p1")

    result = cluster.cli("canceljob", job_id)
    assert result.returncode == 3, result.stderr  # not finished yet, as documented
    assert result.stderr == (f"canceljob: cancel requested for job {job_id}: 1 task cancelled, "
                             "1 task still running (being stopped on its player; "
                             "canceljob --wait waits for that)\n")
    assert "cancelling" in result.stdout and "cancelled" in result.stdout

    result = cluster.cli("canceljob", "--wait", "--timeout", "30", job_id)
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"canceljob: cancel requested for job {job_id}: 2 tasks cancelled\n"


@pytest.mark.parametrize("states, summary", [
    (["cancelled", "cancelling", "running", "ok"],
     "1 task cancelled, 1 task had already ended, 2 tasks still running (being stopped on their "
     "players; canceljob --wait waits for that)"),
    (["cancelled", "cancelled"], "2 tasks cancelled"),
    (["ok"], "0 tasks cancelled, 1 task had already ended"),
])
def test_cancel_summary_counts_every_task_once(states: list[str], summary: str) -> None:
    tasks = [audience_pb2.Task(state=f"TASK_STATE_{s.upper()}")
             for s in states]
    job = audience_pb2.Job(job_id="a" * 32, tasks=tasks)
    assert render.cancel_summary(job) == f"cancel requested for job {'a' * 32}: {summary}"


# ---- 19: what comes from a user or a score is shown, never obeyed ---------------------

def test_getstatus_shows_control_characters_of_a_score_as_escapes(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"], start=False)
    cluster.add_score("hostile", HOSTILE_SCORE, "interface env\n")
    cluster.start()
    code, out, err = submit(cluster, "--wait", "--timeout", "30", "hostile",
                            f"who=x{SCREEN_CLEAR}\ny", "p1.test")
    assert code == 1, err
    job_id = out.splitlines()[0]

    shown = cluster.cli("getstatus", job_id)
    assert shown.returncode == 1
    assert not set(shown.stdout) & {"\x1b", "\r", "\x07", "\u202e"}, shown.stdout
    assert "WHO=x\\x1b[2J\\ny" in shown.stdout  # one line: a newline in a value forges none
    assert "      | before\\x1b[2Jafter\n      | line2\n" in shown.stdout  # CRLF is a line end
    assert "      | title\\x1b]0;pwned\\x07 \\u202eesrever\n" in shown.stdout
    assert "    response: colour=\\x1b[31mred\n" in shown.stdout

    # --json keeps the exact data.
    code, job = job_json(cluster, "getstatus", job_id)
    task = job["tasks"][0]  # type: ignore[index]
    assert job["params"] == {"WHO": f"x{SCREEN_CLEAR}\ny"}
    assert task["stdout"] == "before\x1b[2Jafter\r\nline2\n"
    assert task["stderr"] == "title\x1b]0;pwned\x07 \u202eesrever\n"
    assert task["response"] == {"colour": "\x1b[31mred"}


def test_visible_escapes_exactly_the_control_characters_but_tab() -> None:
    controls = {c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cc"}
    assert controls - {ord("\t")} <= UNSAFE and ord("\t") not in UNSAFE
    assert {0x1B, 0x0D, 0x7F, 0x85, 0x9B, 0x202E, 0x2066} <= UNSAFE
    assert visible("a\x1b[2J\r\n\x7f\x9b\u202e\tb") == "a\\x1b[2J\\r\\n\\x7f\\x9b\\u202e\tb"


def unescape(text: str) -> str:
    """Undo visible() for text that had no backslash of its own."""
    import re

    named = {"n": "\n", "r": "\r"}
    return re.sub(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|([nr]))",
                  lambda m: named[m[3]] if m[3] else chr(int(m[1] or m[2], 16)), text)


@settings(max_examples=1000, deadline=None, database=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=40))
def test_visible_leaves_nothing_a_terminal_obeys_and_loses_nothing(text: str) -> None:
    shown = visible(text)
    assert not any(ord(char) in UNSAFE for char in shown)
    if not any(ord(char) in UNSAFE for char in text):
        assert shown == text
    if "\\" not in text:
        assert unescape(shown) == text


field_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)  # as protobuf carries


def hostile_job(params: dict[str, str], requester: str, reason: str, response: dict[str, str],
                stdout: str, player: str) -> audience_pb2.Job:
    outcome = TaskOutcome(exit_code=1, response=response, stdout=stdout.encode(errors="replace"),
                          reason=reason).to_wire()
    task = audience_pb2.Task(task_id="0" * 32 + ".1", player=player,
                                   state=common_pb2.TASK_STATE_FAILED, attempt=1, outcome=outcome)
    return audience_pb2.Job(job_id="0" * 32, score="hello", scope=audience_pb2.SCOPE_ALL_OF,
                            targets=[player or "p1.test"], params=params, requester=requester,
                            finished=True, status="failed", tasks=[task])


@settings(max_examples=300, deadline=None, database=None)
@given(params=st.dictionaries(field_text, field_text, max_size=3), requester=field_text,
       reason=field_text, response=st.dictionaries(field_text, field_text, max_size=3),
       stdout=st.lists(field_text.filter(lambda s: "\n" not in s), max_size=4), player=field_text)
def test_job_text_shows_every_field_without_control_characters_or_forged_lines(
        params: dict[str, str], requester: str, reason: str, response: dict[str, str],
        stdout: list[str], player: str) -> None:
    text = render.job_text(hostile_job(params, requester, reason, response,
                                       "".join(line + "\n" for line in stdout), player))
    assert not any(ord(char) in UNSAFE - {ord("\n")} for char in text)
    plain = render.job_text(hostile_job({"K": "v"} if params else {}, "r", "x" if reason else "",
                                        {"k": "v"} if response else {},
                                        "".join("x\n" for _ in stdout), "p"))
    assert len(text.split("\n")) == len(plain.split("\n"))  # no field added a line


def test_listplayers_shows_names_from_the_conductor_as_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    reply = audience_pb2.PlayerList(players=[audience_pb2.PlayerInfo(
        name=f"p1{SCREEN_CLEAR}", connected=True, scores=[common_pb2.ScoreInfo(
            name="s\x1b]0;x\x07", valid=False)])])
    client = SimpleNamespace(players=lambda: reply)
    assert listplayers.show(client, False) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "p1\\x1b[2J" in out and "s\\x1b]0;x\\x07 (invalid)" in out


# ---- 20: a closed output pipe ends a command quietly ----------------------------------

def run_with_stdout_closed(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a command whose reader has gone before it writes a byte (as `| head -1` after the
    first line, or `| true`); return its exit code and stderr."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    try:
        stderr = proc.stderr.read().decode(errors="replace")
        return proc.wait(timeout=120), stderr
    finally:
        proc.kill()
        proc.wait()


def audience(cluster: Cluster, module: str, *args: str) -> tuple[int, str]:
    env = cluster.env()
    env["ORCHESTRA_CONFIG"] = str(cluster.audience_config)
    return run_with_stdout_closed([sys.executable, "-m", module, *args], env)


def test_audience_commands_exit_quietly_with_their_own_code_on_a_closed_pipe(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    assert audience(cluster, "audience.listplayers") == (0, "")
    assert audience(cluster, "audience.listplayers", "--json") == (0, "")
    # submitjob --wait: the job id meets the closed pipe; it still waits, and exits with
    # the job's outcome.
    assert audience(cluster, "audience.submitjob", "--wait", "--timeout", "30", "fail",
                    "code=3", "p1.test") == (1, "")
    ok = cluster.cli("submitjob", "--wait", "--timeout", "30", "hello", "p1.test")
    job_id = ok.stdout.splitlines()[0]
    assert audience(cluster, "audience.getstatus", job_id) == (0, "")
    assert audience(cluster, "audience.getstatus", "--help") == (0, "")


def test_orchestra_pki_exits_quietly_on_a_closed_pipe(tmp_path: Path) -> None:
    root = tmp_path / "ssl"
    code, err = run_with_stdout_closed([sys.executable, "-m", "devtools.pki", "init", str(root),
                                        "--conductor", "c.test"])
    assert (code, err) == (0, "")
    assert (root / "certs" / "c.test.pem").exists()
    assert run_with_stdout_closed([sys.executable, "-m", "devtools.pki", "issue", "--help"]) == (0, "")


# The daemons' shared shell, with a body that writes more than a pipe holds or a little.
RUN_CLI = """
import sys
from orchestra.cli import run_cli
size, code = int(sys.argv[1]), int(sys.argv[2])
def body():
    sys.stdout.write("x" * size)
    return code
raise SystemExit(run_cli("prog", body))
"""


@pytest.mark.parametrize("size, buffered, expected", [
    (1_000_000, True, 0),  # the write itself fails: the body is cut short, exit CLOSED_PIPE
    (10, False, 0),  # unbuffered: the same
    (10, True, 7),  # only the final flush fails: the body's own exit code
])
def test_run_cli_ends_quietly_when_its_output_pipe_is_closed(size: int, buffered: bool,
                                                             expected: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    assert run_with_stdout_closed([sys.executable, "-c", RUN_CLI, str(size), "7"], env) == (expected, "")


# ---- 21: daemon log levels ------------------------------------------------------------

@pytest.mark.parametrize("daemon", ["conductor.main", "player.main"])
def test_daemons_refuse_an_unknown_log_level_and_take_known_ones_in_any_case(
        daemon: str, tmp_path: Path) -> None:
    bogus = subprocess.run([sys.executable, "-m", daemon, "--log-level", "bogus"],
                           capture_output=True, text=True, timeout=60)
    assert bogus.returncode == 2
    assert "argument --log-level: invalid choice: 'bogus'" in bogus.stderr
    assert "'debug', 'info', 'warning', 'error', 'critical'" in bogus.stderr
    # A known level in capitals gets past the options to the config file.
    known = subprocess.run([sys.executable, "-m", daemon, "--log-level", "WARNING", "--config",
                            str(tmp_path / "missing.toml")], capture_output=True, text=True, timeout=60)
    assert known.returncode == 2, known.stderr
    assert json.loads(known.stderr)["error"].endswith("config file not found")  # one JSON line
