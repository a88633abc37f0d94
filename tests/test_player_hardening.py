"""Player hardening with real files, processes and daemons: who may change a score,
relative config paths, the kill path of a score that will not die, gRPC fork support."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.devcluster import CONDUCTOR_NAME, SAMPLE_SCORES, Cluster, Proc, write_toml
from orchestra.errors import ExitCode, StartupError
from orchestra.outcome import TaskOutcome
from orchestra.wire import player_pb2
from player import runner
from player.scores import Score, ScoreConf, ScoreUnavailable, resolve, scan
from tests.conftest import FAST_PLAYER, MakeCluster, job_json, submit

NOBODY = 65534
# The player's period between checks of its scores directory (player/main.py).
SCORES_CHECK_ENV = "ORCHESTRA_SCORES_CHECK_SECONDS"


# ---- who may change a score --------------------------------------------------------------


@pytest.fixture
def scores_dir(tmp_path: Path) -> Path:
    """A copy of the sample scores, every file and the directory safe (0755/0644)."""
    scores = tmp_path / "scores"
    shutil.copytree(SAMPLE_SCORES, scores)
    scores.chmod(0o755)
    for path in scores.iterdir():
        path.chmod(0o644 if path.name.endswith(".conf") else 0o755)
    return scores


def invalid(scores: Path) -> dict[str, str]:
    return {entry.name: entry.error for entry in scan(scores) if entry.score is None}


def test_safe_scores_are_valid(scores_dir: Path) -> None:
    assert invalid(scores_dir) == {}
    assert resolve(scores_dir, "hello").name == "hello"


@pytest.mark.parametrize("target, mode, reason", [
    ("hello", 0o777, "hello is writable by its group and others (mode 0777)"),
    ("hello", 0o757, "hello is writable by others (mode 0757)"),
    ("hello.conf", 0o664, "hello.conf is writable by its group (mode 0664)"),
])
def test_score_or_conf_writable_by_others_is_invalid_and_refused(
        scores_dir: Path, target: str, mode: int, reason: str) -> None:
    (scores_dir / target).chmod(mode)
    assert invalid(scores_dir) == {"hello": reason}
    with pytest.raises(ScoreUnavailable, match=reason.replace("(", r"\(").replace(")", r"\)")):
        resolve(scores_dir, "hello")
    assert resolve(scores_dir, "fail").name == "fail"  # the others are not affected


def test_world_writable_scores_dir_makes_every_score_invalid(scores_dir: Path) -> None:
    scores_dir.chmod(0o777)
    reason = f"scores directory {scores_dir.resolve()} is writable by its group and others (mode 0777)"
    entries = invalid(scores_dir)
    assert set(entries) == {"fail", "hello", "showenv", "sleep", "uptime"}
    assert set(entries.values()) == {reason}
    with pytest.raises(ScoreUnavailable, match="scores directory .* is writable"):
        resolve(scores_dir, "hello")


def test_score_in_a_writable_subdirectory_is_refused(scores_dir: Path) -> None:
    sub = scores_dir / "lib"
    sub.mkdir(mode=0o755)
    (scores_dir / "hello").rename(sub / "hello")
    (scores_dir / "hello").symlink_to(sub / "hello")
    assert resolve(scores_dir, "hello").path == sub.resolve() / "hello"
    sub.chmod(0o777)
    assert invalid(scores_dir) == {
        "hello": f"hello: directory {sub.resolve()} is writable by its group and others (mode 0777)"}


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
@pytest.mark.parametrize("target", ["hello", "hello.conf", "."])
def test_score_owned_by_another_user_is_invalid_and_refused(scores_dir: Path, target: str) -> None:
    os.chown(scores_dir / target, NOBODY, -1)
    with pytest.raises(ScoreUnavailable, match=f"is owned by uid {NOBODY}, not by root or the player's user"):
        resolve(scores_dir, "hello")
    assert "hello" in invalid(scores_dir)


def test_score_made_world_writable_after_the_inventory_is_refused_at_run(
        make_cluster: MakeCluster) -> None:
    """The inventory said hello was fine; the check right before the run refuses it."""
    cluster = make_cluster(start=False)
    cluster.start_conductor()
    # No re-scan of the scores directory meanwhile: the inventory keeps saying "valid".
    cluster.start_player("p1.test", extra_env={SCORES_CHECK_ENV: "3600"})
    cluster.wait_connected(["p1.test"])
    (cluster.scores_dir("p1.test") / "hello").chmod(0o777)
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")
    task = job["tasks"][0]  # type: ignore[index]
    assert code == 1 and task["state"] == "refused", job
    assert task["reason"] == "hello is writable by its group and others (mode 0777)"
    assert task["stdout"] == ""


def test_unsafe_score_is_reported_invalid_in_the_players_inventory(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(start=False)
    (cluster.scores_dir("p1.test") / "hello.conf").chmod(0o666)
    cluster.start()
    [info] = cluster.players() or []
    scores = {score.name: score for score in info.scores}
    assert not scores["hello"].valid and "hello.conf is writable" in scores["hello"].error
    assert scores["fail"].valid
    reason = "hello.conf is writable by its group and others (mode 0666)"
    result = cluster.cli("submitjob", "--json", "--wait", "--timeout", "30", "hello", "p1.test")
    if result.returncode == 2:  # the conductor refuses what no target reported valid
        assert reason in result.stderr
    else:
        task = json.loads(result.stdout)["tasks"][0]
        assert result.returncode == 1 and task["state"] == "refused" and task["reason"] == reason


# ---- relative --config -------------------------------------------------------------------


def test_player_with_a_relative_config_from_another_directory_runs_env_scores(
        make_cluster: MakeCluster) -> None:
    """Every path in player.toml relative, --config relative, the player's working
    directory elsewhere again: an env score still gets an absolute ORC_RESPONSE_FILE."""
    cluster = make_cluster(start=False)
    cluster.start_conductor()
    home = cluster.player_dir("p1.test")
    relative = {key: os.path.relpath(path, home) for key, path in (
        ("ca", cluster.ssl.ca_cert), ("cert", cluster.ssl.cert("p1.test")),
        ("key", cluster.ssl.key("p1.test")))}
    write_toml(home / "player.toml", {
        "conductor": f"127.0.0.1:{cluster.port}", "conductor_name": CONDUCTOR_NAME,
        "scores_dir": "scores", "spool_dir": "spool", **FAST_PLAYER}, relative)
    cwd = cluster.root / "logs"
    cwd.mkdir(exist_ok=True)
    config = os.path.relpath(home / "player.toml", cwd)
    proc = Proc("player-p1.test", [sys.executable, "-m", "player.main", "--config", config],
                cluster.root / "logs" / "player-p1.test.log")
    with proc.log.open("ab") as log:
        proc.popen = subprocess.Popen(proc.argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=log, env=cluster.env(), start_new_session=True)
    cluster.procs[proc.name] = proc
    cluster.wait_connected(["p1.test"])

    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")
    task = job["tasks"][0]  # type: ignore[index]
    assert code == 0 and task["state"] == "ok", job
    assert task["response"] == {"greeting": "hello world", "player": "p1.test"}
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "showenv", "p1.test")
    env = dict(line.split("=", 1) for line in job["tasks"][0]["stdout"].splitlines()  # type: ignore[index]
               if "=" in line)
    response = Path(env["ORC_RESPONSE_FILE"])
    task_id = job["tasks"][0]["task_id"]  # type: ignore[index]
    assert response.is_absolute()
    assert response.resolve() == home.resolve() / "spool" / "tasks" / task_id / "response"


def test_task_files_are_absolute_whatever_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    files = runner.TaskFiles(Path("spool/tasks"), "t1")
    assert files.response == tmp_path / "spool" / "tasks" / "t1" / "response"
    env = runner.build_env("probe", runner.TaskContext("t1", 1, "j", "p", "r", {}), files.response)
    assert env["ORC_RESPONSE_FILE"] == str(tmp_path / "spool" / "tasks" / "t1" / "response")


# ---- a score that will not die ------------------------------------------------------------


def test_score_that_cannot_be_reaped_ends_lost_with_a_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that survives SIGKILL (stuck in the kernel) cannot be made on purpose;
    signals that never arrive give the runner the same view: a wait that times out."""
    sent: list[signal.Signals] = []
    monkeypatch.setattr(runner, "kill_group", lambda pgid, sig: sent.append(sig))
    monkeypatch.setattr(runner, "REAP_SECONDS", 0.3, raising=False)
    path = tmp_path / "scores" / "stuck"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\necho started\nexec sleep 300\n")
    path.chmod(0o755)
    score = Score("stuck", path, ScoreConf(timeout=0.3))
    limits = runner.Limits(default_timeout=30, kill_grace=0.2, output_tail_bytes=64,
                           max_output_bytes=1 << 20, response_max_bytes=1024)
    ctx = runner.TaskContext("t1", 1, "job1", "p1.test", "alice", {})
    execution = runner.Execution(score, ctx, runner.TaskFiles(tmp_path / "tasks", "t1"), limits)
    pids: list[int] = []

    async def on_spawn(pid: int, start: int | None) -> None:
        pids.append(pid)
    began = time.monotonic()
    try:
        result = asyncio.run(execution.run(on_spawn))
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    assert time.monotonic() - began < 5
    assert sent == [signal.SIGTERM, signal.SIGKILL]
    # It may still be running: lost (never retried by itself), not timed_out.
    assert result.ending == player_pb2.ENDING_LOST
    outcome = TaskOutcome.from_wire(result.outcome)
    assert outcome.reason == (f"timed out after 0.3 s; its process {pids[0]} did not exit within "
                              f"0.3 s of SIGKILL, exit status unknown")
    assert (outcome.exit_code, outcome.signal) == (None, 0)
    assert outcome.stdout == b"started\n" and outcome.finished_at is not None


def _sigterm_ignoring_score(cluster: Cluster, tmp_path: Path, timeout: float) -> tuple[Path, Path]:
    """A score that notes each SIGTERM and carries on; its children ignore nothing."""
    terms, pidfile = tmp_path / "terms", tmp_path / "pid"
    cluster.add_score("stubborn", (
        "#!/bin/sh\n"
        f"trap 'date +%s.%N >> {terms}' TERM\n"
        f"echo $$ > {pidfile}\n"
        "echo running\n"
        "while :; do sleep 0.05; done\n"), f"interface env\ntimeout {timeout:g}\n")
    return terms, pidfile


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("how", ["timed_out", "cancelled"])
def test_score_ignoring_sigterm_is_killed_after_kill_grace(
        make_cluster: MakeCluster, tmp_path: Path, how: str) -> None:
    kill_grace = FAST_PLAYER["kill_grace"]
    cluster = make_cluster(start=False)
    terms, pidfile = _sigterm_ignoring_score(cluster, tmp_path, 1 if how == "timed_out" else 120)
    cluster.start()
    code, out, err = submit(cluster, "stubborn", "p1.test")
    assert code == 0, err
    job_id = out.strip()
    cluster.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), "score started")
    pid = int(pidfile.read_text())
    try:
        if how == "cancelled":
            assert cluster.cli("canceljob", job_id).returncode in (0, 1, 3)
        cluster.wait_for(lambda: terms.exists(), "SIGTERM delivered", timeout=10)
        assert _alive(pid), "the score should have survived SIGTERM"
        code, job = job_json(cluster, "getstatus", "--wait", "--timeout", "30", job_id)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # never leave a score that ignores SIGTERM behind
    task = job["tasks"][0]  # type: ignore[index]
    assert code == 1 and task["state"] == how, job
    assert task["signal"] == signal.SIGKILL and task["exit_code"] is None
    assert task["stdout"] == "running\n"
    assert not _alive(pid)
    [term_at] = [float(line) for line in terms.read_text().split()]
    finished_at = dt.datetime.fromisoformat(task["finished_at"]).timestamp()
    assert finished_at - term_at >= kill_grace * 0.9, (term_at, finished_at)
    reason: Callable[[str], bool] = (lambda r: r == "timed out after 1 s") if how == "timed_out" \
        else (lambda r: "cancel" in r)
    assert reason(task["reason"]), task["reason"]


# ---- gRPC fork support -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "YES", " yes ", "t", "y"])
def test_fork_support_switched_on_is_refused(value: str) -> None:
    with pytest.raises(StartupError, match=r"^GRPC_ENABLE_FORK_SUPPORT="):
        runner.refuse_fork_support({"GRPC_ENABLE_FORK_SUPPORT": value})


@pytest.mark.parametrize("environ", [{}, {"GRPC_ENABLE_FORK_SUPPORT": "0"},
                                     {"GRPC_ENABLE_FORK_SUPPORT": "false"},
                                     {"GRPC_ENABLE_FORK_SUPPORT": ""}])
def test_fork_support_off_or_unset_is_accepted(environ: dict[str, str]) -> None:
    runner.refuse_fork_support(environ)


def test_player_refuses_to_start_with_fork_support_on(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(start=False)
    cluster.start_conductor()
    refused = cluster.start_player("p1.test", extra_env={"GRPC_ENABLE_FORK_SUPPORT": "true"})
    assert refused.popen is not None
    assert refused.popen.wait(30) == ExitCode.FAILED
    [line] = cluster.log_text("player-p1.test").splitlines()  # one structured line
    event = json.loads(line)
    assert event["event"] == "daemon_failed" and event["exit_code"] == 1
    assert event["error"] == ("GRPC_ENABLE_FORK_SUPPORT=true is set: gRPC fork support can hang a player "
                              "that spawns scores; unset it or set it to 0")
    # What the systemd unit sets is fine.
    cluster.start_player("p1.test", extra_env={"GRPC_ENABLE_FORK_SUPPORT": "0"})
    cluster.wait_connected(["p1.test"])
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")
    assert code == 0, job

