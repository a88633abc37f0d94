"""Schedules with real daemons: runs that are ordinary jobs (or workflows) of the owner,
labelled with the schedule's name; pause, resume and remove; no overlap unless allowed;
runs missed while the conductor was down (skip, or once); a conductor killed right after
committing a run; a run the policy no longer allows; bad input; another requester's
schedules. Six-field (seconds) cron expressions keep each test to seconds."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from audience.client import Client
from devtools.devcluster import Cluster
from orchestra.config import load_audience
from tests.conftest import MakeCluster, queue_rows
from tests.test_rollouts import CONF, LOGGING_SCORE, most_at_once, runs

ROOT = "user:root"  # the tests run as root: the local socket's requester


def job_file(tmp_path: Path, name: str, log: Path, sleep: float = 0, targets: tuple[str, ...] = ("p1.test",),
             score: str = "step") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'score = "{score}"\ntargets = {json.dumps(list(targets))}\nscope = "all"\n'
                    f'[params]\nLOG = "{log}"\nSLEEP = "{sleep}"\n')
    return path


def add(cluster: Cluster, name: str, cron: str, *args: str,
        config: Path | None = None) -> subprocess.CompletedProcess[str]:
    return cluster.cli("schedule", "add", name, "--cron", cron, *args, config=config)


def added(cluster: Cluster, name: str, cron: str, *args: str) -> dict[str, object]:
    result = add(cluster, name, cron, "--json", *args)
    assert result.returncode == 0, result.stderr
    info: dict[str, object] = json.loads(result.stdout)
    return info


def schedules(cluster: Cluster, config: Path | None = None) -> dict[str, dict[str, object]]:
    result = cluster.cli("schedule", "list", "--json", config=config)
    assert result.returncode == 0, result.stderr
    return {s["name"]: s for s in json.loads(result.stdout)["schedules"]}


def jobs_of(cluster: Cluster, name: str) -> list[dict[str, object]]:
    """The jobs listjobs finds with the schedule's label, oldest first."""
    result = cluster.cli("listjobs", "--json", "--label", f"schedule={name}")
    assert result.returncode == 0, result.stderr
    found: list[dict[str, object]] = json.loads(result.stdout)["jobs"]
    return found[::-1]


def audit(cluster: Cluster) -> list[dict[str, object]]:
    return [json.loads(line) for line in (cluster.state_dir / "audit.log").read_text().splitlines()]


def seconds_cron(*times: float) -> str:
    """A six-field expression due at the second of the minute of each time given (so once
    a minute each)."""
    return f"{','.join(str(s) for s in sorted({int(t) % 60 for t in times}))} * * * * *"


def stamp(iso_time: object) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(iso_time).replace("Z", "+00:00")).timestamp()


def test_a_schedule_submits_ordinary_jobs_of_its_owner_labelled_with_its_name(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster()
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    info = added(cluster, "tick", " */2  * * * * * ", "--file", str(job_file(tmp_path, "tick", log)))
    assert (info["owner"], info["cron"], info["kind"], info["what"], info["paused"], info["missed"]) == \
        (ROOT, "*/2 * * * * *", "job", "step", False, "skip")
    assert stamp(info["next_at"]) % 2 == 0 and info["last_id"] is None
    cluster.wait_for(lambda: sum(1 for r in runs(log) if r["end"]) >= 2, "two runs")
    jobs = jobs_of(cluster, "tick")
    assert len(jobs) >= 2
    for job in jobs:
        assert (job["requester"], job["score"], job["labels"], job["targets"]) == \
            (ROOT, "step", {"schedule": "tick"}, ["p1.test"])
    created = [stamp(job["created_at"]) for job in jobs]
    assert all(later - earlier >= 1.5 for earlier, later in zip(created, created[1:]))  # one per due time
    ran = [r["job"] for r in runs(log)]
    assert len(ran) == len(set(ran))  # each run's job ran once
    shown = schedules(cluster)["tick"]
    assert shown["last_id"] in {job["job_id"] for job in jobs}
    assert shown["last_status"] in ("pending", "ok") and shown["last_error"] is None
    assert stamp(shown["next_at"]) > stamp(shown["last_at"])
    text = cluster.cli("schedule", "list")
    assert text.returncode == 0 and text.stdout.split("\n")[0].split() == \
        ["NAME", "OWNER", "CRON", "KIND", "WHAT", "PAUSED", "NEXT", "LAST", "STATUS"]
    assert str(log) not in text.stdout + json.dumps(shown)  # parameter values are never shown
    entries = audit(cluster)
    assert [e["decision"] for e in entries if e["event"] == "schedule_add"] == ["accepted"]
    add_entry = next(e for e in entries if e["event"] == "schedule_add")
    assert add_entry["param_keys"] == ["LOG", "SLEEP"] and str(log) not in json.dumps(add_entry)
    run_ids = {e["run_id"] for e in entries if e["event"] == "schedule_run" and e["decision"] == "accepted"}
    assert {job["job_id"] for job in jobs} <= run_ids
    assert all(e["schedule"] == "tick" for e in entries if e["event"] == "submit")


def test_pause_resume_and_remove(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster()
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    added(cluster, "every", "* * * * * *", "--file", str(job_file(tmp_path, "every", log)))
    cluster.wait_for(lambda: len(jobs_of(cluster, "every")) >= 1, "a first run")
    paused = cluster.cli("schedule", "pause", "every", "--json")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["paused"] is True and json.loads(paused.stdout)["next_at"] is None
    assert cluster.cli("schedule", "pause", "every").stdout == "every: paused\n"  # again: no change
    count = len(jobs_of(cluster, "every"))
    time.sleep(2.5)
    assert len(jobs_of(cluster, "every")) == count  # paused: no run
    resumed = cluster.cli("schedule", "resume", "every")
    assert resumed.returncode == 0 and resumed.stdout.startswith("every: next run at "), resumed
    cluster.wait_for(lambda: len(jobs_of(cluster, "every")) > count, "a run after resume")
    removed = cluster.cli("schedule", "--json", "remove", "every")
    assert removed.returncode == 0 and json.loads(removed.stdout)["removed"] is True
    count = len(jobs_of(cluster, "every"))
    time.sleep(2.5)
    assert len(jobs_of(cluster, "every")) == count and schedules(cluster) == {}
    gone = cluster.cli("schedule", "resume", "every")
    assert gone.returncode == 5 and gone.stderr == "schedule: no such schedule every\n"
    changes = [(e["event"], e["decision"]) for e in audit(cluster) if e["event"] in
               ("schedule_pause", "schedule_resume", "schedule_remove")]
    assert changes == [("schedule_pause", "accepted"), ("schedule_pause", "accepted"),
                       ("schedule_resume", "accepted"), ("schedule_remove", "accepted")]


def test_runs_never_overlap_unless_the_schedule_allows_it(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(player_settings={"max_concurrent": 8})
    cluster.add_score("step", LOGGING_SCORE, CONF)
    serial_log, parallel_log = tmp_path / "serial.log", tmp_path / "parallel.log"
    added(cluster, "serial", "* * * * * *", "--file", str(job_file(tmp_path, "serial", serial_log, sleep=2.5)))
    added(cluster, "parallel", "* * * * * *", "--overlap",
          "--file", str(job_file(tmp_path, "parallel", parallel_log, sleep=2.5)))
    cluster.wait_for(lambda: sum(1 for r in runs(serial_log) if r["end"]) >= 2, "two serial runs", timeout=30)
    cluster.wait_for(lambda: most_at_once(runs(parallel_log)) >= 2, "overlapping runs", timeout=30)
    assert most_at_once(runs(serial_log)) == 1
    skips = [e for e in audit(cluster) if e["event"] == "schedule_skip"]
    assert skips and {e["schedule"] for e in skips} == {"serial"} and {e["reason"] for e in skips} == {"overlap"}
    serial_jobs = {job["job_id"] for job in jobs_of(cluster, "serial")}
    assert all(str(e["detail"]).startswith("skipped: the previous run ") and str(e["detail"]).split()[4]
               in serial_jobs and str(e["detail"]).endswith(" is still running") for e in skips)


def test_runs_missed_while_the_conductor_was_down_are_skipped_or_run_once(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster()
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    first = int(time.time()) + 8
    # One run due while the conductor is down, and one schedule with three due then.
    added(cluster, "skipper", seconds_cron(first), "--file", str(job_file(tmp_path, "skipper", log)))
    added(cluster, "catcher", seconds_cron(first, first + 2, first + 4), "--missed", "once",
          "--file", str(job_file(tmp_path, "catcher", log)))
    cluster.conductor().stop()
    assert time.time() < first - 0.5, "too slow to stop the conductor before the first due time"
    while time.time() < first + 5:
        time.sleep(0.1)
    cluster.start_conductor()
    cluster.wait_for(lambda: len(jobs_of(cluster, "catcher")) == 1, "the one catch-up run")
    time.sleep(2.5)  # nothing more comes
    assert jobs_of(cluster, "skipper") == [] and len(jobs_of(cluster, "catcher")) == 1
    shown = schedules(cluster)
    assert shown["skipper"]["last_status"] == "skipped" and shown["skipper"]["last_id"] is None
    assert "was missed (the conductor was not running then)" in str(shown["skipper"]["last_error"])
    assert shown["catcher"]["last_id"] == jobs_of(cluster, "catcher")[0]["job_id"]
    assert shown["catcher"]["last_error"] is None
    for name in ("skipper", "catcher"):  # on to the next due time after now: a minute on
        assert stamp(shown[name]["next_at"]) == first + 60
    entries = audit(cluster)
    assert [(e["schedule"], e["reason"]) for e in entries if e["event"] == "schedule_skip"] == [("skipper", "missed")]
    caught = [e for e in entries if e["event"] == "schedule_run"]
    assert len(caught) == 1 and caught[0]["schedule"] == "catcher" and caught[0]["missed"]
    assert stamp(caught[0]["due_at"]) == first


def test_a_conductor_killed_right_after_committing_a_run_does_not_run_it_again(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(start=False)
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    conductor = cluster.start_conductor(extra_env={"ORCHESTRA_FAULT": "submit.committed"})
    cluster.start_player("p1.test")
    cluster.wait_connected(["p1.test"])
    due_at = int(time.time()) + 4
    # --missed once: were the run not moved past in the job's own commit, the restarted
    # conductor would find it due and missed, and run it again.
    added(cluster, "once", seconds_cron(due_at), "--missed", "once",
          "--file", str(job_file(tmp_path, "once", log)))
    cluster.wait_for(lambda: not conductor.running, "the conductor killed at submit.committed", timeout=20)
    assert conductor.popen is not None and conductor.popen.returncode == -signal.SIGKILL
    committed = queue_rows(cluster, "jobs")
    assert len(committed) == 1
    row = next(r for r in queue_rows(cluster, "schedules") if r["name"] == "once")
    assert (row["last_id"], row["next_at"]) == (committed[0]["id"], due_at + 60)
    cluster.start_conductor()
    cluster.wait_connected(["p1.test"])
    job_id = str(committed[0]["id"])
    assert cluster.cli("getstatus", "--wait", "--timeout", "30", job_id).returncode == 0
    time.sleep(2)
    assert [job["job_id"] for job in jobs_of(cluster, "once")] == [job_id]
    assert [r["job"] for r in runs(log)] == [job_id]
    assert not [e for e in audit(cluster) if e["event"] in ("schedule_run", "schedule_skip")
                and e.get("decision") != "accepted"]


def test_a_run_the_policy_no_longer_allows_is_recorded_refused(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster()
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    added(cluster, "revoked", "* * * * * *", "--file", str(job_file(tmp_path, "revoked", log)))
    cluster.wait_for(lambda: len(jobs_of(cluster, "revoked")) >= 1, "a first run")
    text = cluster.conductor_config.read_text()
    cluster.conductor_config.write_text(text + '\n[[policy]]\nname = "no-step"\neffect = "deny"\n'
                                               'requesters = ["user:root"]\nscores = ["step"]\n')
    before = cluster.log_text("conductor").count("policy_reloaded")
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: cluster.log_text("conductor").count("policy_reloaded") > before, "policy reload")
    cluster.wait_for(lambda: schedules(cluster)["revoked"]["last_status"] == "refused", "a refused run")
    count = len(jobs_of(cluster, "revoked"))
    time.sleep(2.5)
    assert len(jobs_of(cluster, "revoked")) == count  # every run since is refused: no job
    shown = schedules(cluster)["revoked"]
    assert str(shown["last_error"]).startswith("refused: by policy: policy rule 'no-step' denies user:root")
    refused = [e for e in audit(cluster) if e["event"] == "schedule_run" and e["decision"] == "refused"]
    assert len(refused) >= 2 and all("no-step" in str(e["reason"]) for e in refused)
    assert stamp(shown["next_at"]) > time.time() - 1  # the schedule goes on


def test_a_schedule_of_a_workflow_runs_workflows_labelled_with_its_name(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster()
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    flow = tmp_path / "flow.toml"
    flow.write_text(f"""name = "two steps"
[params]
LOG = "{log}"
[steps.first]
score = "step"
targets = ["p1.test"]
params = {{ LOG = "{{{{ params.LOG }}}}", SLEEP = "0" }}
[steps.second]
after = ["first"]
score = "step"
targets = ["p1.test"]
params = {{ LOG = "{{{{ params.LOG }}}}", SLEEP = "0" }}
""")
    info = added(cluster, "flows", "*/3 * * * * *", "--workflow", str(flow), f"LOG={log}")
    assert (info["kind"], info["what"]) == ("workflow", "two steps")
    cluster.wait_for(lambda: str(schedules(cluster)["flows"]["last_id"] or "").startswith("w"), "a workflow run")
    workflow_id = str(schedules(cluster)["flows"]["last_id"])
    client = Client(load_audience(cluster.audience_config, explicit=True))
    try:
        done = client.wait_workflow(workflow_id, 30)
    finally:
        client.close()
    assert (done.status, done.requester, dict(done.labels)) == ("ok", ROOT, {"schedule": "flows"})
    assert [step.state for step in done.steps] == ["ok", "ok"]
    step_jobs = {step.job_id for step in done.steps}
    assert step_jobs <= {job["job_id"] for job in jobs_of(cluster, "flows")}  # its steps carry the label
    assert step_jobs <= {r["job"] for r in runs(log)}


BAD = [
    (("bad", "--cron", "61 * * * *"), "invalid cron expression '61 * * * *'"),
    (("bad", "--cron", "* * * * * * *"), "has 7 fields"),
    (("bad", "--cron", "0 0 30 2 *"), "invalid cron expression"),
    (("Nightly Run", "--cron", "* * * * *"), "invalid schedule name 'Nightly Run'"),
    (("dup", "--cron", "* * * * *"), "a schedule named dup exists already"),
    (("bad", "--cron", "* * * * *", "--missed", "twice"), "invalid choice: 'twice'"),
]


def test_bad_schedules_are_refused_at_once_with_one_line(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster()
    cluster.add_score("step", LOGGING_SCORE, CONF)
    job = job_file(tmp_path, "job", tmp_path / "runs.log")
    added(cluster, "dup", "0 0 1 1 *", "--file", str(job))
    for args, message in BAD:
        result = cluster.cli("schedule", "add", *args, "--file", str(job))
        assert result.returncode == 2 and result.stdout == "", result
        assert result.stderr.startswith("schedule: ") and result.stderr.count("\n") == 1, result
        assert message in result.stderr, result
    assert list(schedules(cluster)) == ["dup"]
    rejected = [e["reason"] for e in audit(cluster) if e["event"] == "schedule_add" and e["decision"] == "rejected"]
    assert len(rejected) == 5  # all but the bad --missed, which the command line refuses itself


def test_a_schedule_is_checked_as_its_run_would_be(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster()
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    for job, message in ((job_file(tmp_path, "nohost", log, targets=("nowhere.test",)),
                          "not in the players file: nowhere.test"),
                         (job_file(tmp_path, "noscore", log, score="nosuchscore"), "no target can run nosuchscore"),
                         (tmp_path / "missing.toml", "cannot read job file")):
        result = add(cluster, "checked", "* * * * *", "--file", str(job))
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result
    neither = add(cluster, "checked", "* * * * *")
    assert neither.returncode == 2 and "one of the arguments --file --workflow is required" in neither.stderr
    unknown = cluster.cli("schedule", "pause", "nosuch")
    assert (unknown.returncode, unknown.stderr) == (5, "schedule: no such schedule nosuch\n")
    assert schedules(cluster) == {}
    rejected = [e for e in audit(cluster) if e["event"] == "schedule_add"]
    assert len(rejected) == 2 and {e["decision"] for e in rejected} == {"rejected"}  # the file not read: never sent


THREE = {"audience": {"alice.test": {"scores": ["*"], "targets": ["*"]},
                      "bob.test": {"scores": ["*"], "targets": ["*"]},
                      "carol.test": {"scores": ["*"], "targets": ["*"], "actions": ["run", "read"]}}}


def test_another_requesters_schedule_is_invisible_and_untouchable(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(audience_names=["alice.test", "bob.test", "carol.test"], conductor_settings=THREE)
    alice, bob, carol = (cluster.remote_audience_config(f"{name}.test") for name in ("alice", "bob", "carol"))
    cluster.add_score("step", LOGGING_SCORE, CONF)
    job = job_file(tmp_path, "job", tmp_path / "runs.log")
    result = add(cluster, "alices", "0 0 1 1 *", "--file", str(job), config=alice)
    assert result.returncode == 0, result.stderr
    assert list(schedules(cluster, config=alice)) == ["alices"]
    assert schedules(cluster, config=bob) == {}
    for action in ("pause", "resume", "remove"):
        refused = cluster.cli("schedule", action, "alices", config=bob)
        assert (refused.returncode, refused.stderr) == (5, "schedule: no such schedule alices\n")
    # Carol may read alice's jobs of that score: she sees the schedule, but only its owner
    # (or root on the conductor host) may change it.
    assert schedules(cluster, config=carol)["alices"]["owner"] == "cert:alice.test"
    denied = cluster.cli("schedule", "pause", "alices", config=carol)
    assert denied.returncode == 2 and "only its owner (or root) may pause it" in denied.stderr
    assert schedules(cluster)["alices"]["owner"] == "cert:alice.test"  # root sees every schedule
    assert cluster.cli("schedule", "pause", "alices").returncode == 0  # and may change it
    assert cluster.cli("schedule", "resume", "alices", config=alice).returncode == 0
    entries = [(e["event"], e["decision"], e["requester"]) for e in audit(cluster)
               if str(e["event"]).startswith("schedule_") and e["event"] != "schedule_add"]
    assert entries == [("schedule_pause", "denied", "cert:bob.test"), ("schedule_resume", "denied", "cert:bob.test"),
                       ("schedule_remove", "denied", "cert:bob.test"), ("schedule_pause", "denied", "cert:carol.test"),
                       ("schedule_pause", "accepted", ROOT), ("schedule_resume", "accepted", "cert:alice.test")]
