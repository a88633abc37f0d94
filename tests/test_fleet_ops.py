"""An operator's fleet commands with real daemons: retryjob, drained hosts and groups,
@group targets, job files, names and labels, and deletejob."""

from __future__ import annotations

import getpass
import json
import signal
from pathlib import Path

from tests.conftest import MakeCluster, job_json, queue_rows, submit
from tests.test_rollouts import CONF, LOGGING_SCORE, runs

GROUPS = {"web": ["p1.test", "p2.test"], "all": ["p*.test"], "empty": ["nothing*"]}


def test_retryjob_reruns_the_failed_tasks_as_new_attempts(make_cluster: MakeCluster, tmp_path: Path) -> None:
    players = ["p1.test", "p2.test", "p3.test"]
    cluster = make_cluster(players)
    log, flag = tmp_path / "runs.log", tmp_path / "broken"
    flag.write_text("")
    score = LOGGING_SCORE.replace("exit 0\n", f"[ -e {flag} ] && [ \"$ORC_PLAYER\" != p1.test ] && exit 4\nexit 0\n")
    cluster.add_score("fix", score, CONF)
    code, job = job_json(cluster, "submitjob", "--wait", "--all-of", "fix", f"LOG={log}", "SLEEP=0", *players)
    assert code == 1 and [t["state"] for t in job["tasks"]] == ["ok", "failed", "failed"]  # type: ignore[index]
    job_id = str(job["job_id"])
    nothing = cluster.cli("retryjob", "--lost", job_id)
    assert nothing.returncode == 2 and "has no tasks that ended lost" in nothing.stderr
    flag.unlink()
    retried = cluster.cli("retryjob", "--wait", "--json", job_id)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    again = json.loads(retried.stdout)
    assert again["status"] == "ok"
    tasks = again["tasks"]
    assert [(t["state"], t["attempt"], t["retries"]) for t in tasks] == [("ok", 1, 0), ("ok", 2, 1), ("ok", 2, 1)]
    assert [h["state"] for h in tasks[1]["history"]] == ["failed"]
    ran = sorted((r["player"], r["attempt"]) for r in runs(log))
    assert ran == [("p1.test", 1), ("p2.test", 1), ("p2.test", 2), ("p3.test", 1), ("p3.test", 2)]
    assert cluster.cli("retryjob", "nonsense").returncode == 2
    assert cluster.cli("retryjob", "0" * 32).returncode == 5


def test_a_drained_host_gets_nothing_new_until_undrained(make_cluster: MakeCluster, tmp_path: Path) -> None:
    players = ["p1.test", "p2.test", "p3.test"]
    cluster = make_cluster(players, conductor_settings={"groups": GROUPS})
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    drained = cluster.cli("drain", "--reason", "kernel patch", "p2.test", "--json")
    assert drained.returncode == 0, drained.stderr
    assert json.loads(drained.stdout)["hosts"] == ["p2.test"]
    listing = json.loads(cluster.cli("listplayers", "--json").stdout)
    shown = {p["name"]: (p["drained"], p["drained_reason"]) for p in listing["players"]}
    assert shown["p2.test"] == ("p2.test", "kernel patch") and shown["p1.test"][0] is None
    code, out, err = submit(cluster, "--all-of", "step", f"LOG={log}", "SLEEP=0", "p1.test", "p2.test")
    assert code == 0, err
    all_of = out.strip()
    for _ in range(3):  # a one-of job whose other target is drained goes to the free one
        code, job = job_json(cluster, "submitjob", "--wait", "--one-of", "step", f"LOG={log}", "SLEEP=0",
                             "p2.test", "p3.test")
        assert code == 0 and job["tasks"][0]["player"] == "p3.test"  # type: ignore[index]
    cluster.wait_for(lambda: any(r["player"] == "p1.test" and r["end"] for r in runs(log)), "p1 done")
    # A restart keeps the drain: it is in the queue, not in memory.
    cluster.conductor().stop(signal.SIGKILL)
    cluster.start_conductor()
    cluster.wait_connected(players)
    status = json.loads(cluster.cli("getstatus", "--json", all_of).stdout)
    assert [t["state"] for t in status["tasks"]] == ["ok", "queued"]
    assert "p2.test" not in {r["player"] for r in runs(log)}
    assert cluster.cli("undrain", "p2.test").returncode == 0
    assert cluster.cli("getstatus", "--wait", "--timeout", "30", all_of).returncode == 0
    audit = [json.loads(line) for line in (cluster.state_dir / "audit.log").read_text().splitlines()]
    assert [a["event"] for a in audit if a["event"] in ("drain", "undrain")] == ["drain", "undrain"]


def test_groups_name_hosts_in_every_command(make_cluster: MakeCluster, tmp_path: Path) -> None:
    players = ["p1.test", "p2.test", "p3.test"]
    cluster = make_cluster(players, conductor_settings={"groups": GROUPS})
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    code, job = job_json(cluster, "submitjob", "--wait", "--all-of", "step", f"LOG={log}", "SLEEP=0", "@web")
    assert code == 0 and job["targets"] == ["p1.test", "p2.test"]
    code, _, err = submit(cluster, "step", "@web")
    assert code == 2 and "choose --all-of or --one-of" in err
    for bad, message in (("@nope", "no such group @nope"), ("@empty", "group @empty matches no player")):
        code, _, err = submit(cluster, "--all-of", "step", bad)
        assert code == 2 and message in err
    listed = json.loads(cluster.cli("listplayers", "--json", "@web").stdout)
    assert [p["name"] for p in listed["players"]] == ["p1.test", "p2.test"]
    jobs = json.loads(cluster.cli("listjobs", "--json", "--target", "@web").stdout)
    assert [j["job_id"] for j in jobs["jobs"]] == [job["job_id"]]
    assert cluster.cli("drain", "@web").returncode == 0
    listed = json.loads(cluster.cli("listplayers", "--json").stdout)
    assert {p["name"]: p["drained"] for p in listed["players"]} == {"p1.test": "@web", "p2.test": "@web",
                                                                   "p3.test": None}
    assert cluster.cli("drain", "@nope").returncode == 2


def test_a_job_file_with_overrides_names_labels_and_secrets(make_cluster: MakeCluster, tmp_path: Path) -> None:
    players = ["p1.test", "p2.test"]
    cluster = make_cluster(players)
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE.replace("exit 0\n", 'echo "token=$ORC_TOKEN" >&2\nexit 0\n'),
                      CONF + "param LOG required\nparam SLEEP optional\nparam TOKEN optional secret\n")
    (tmp_path / "token").write_text("s3cret\n")
    job_file = tmp_path / "deploy.toml"
    job_file.write_text(f"""
score = "step"
targets = ["p1.test", "p2.test"]
scope = "all"
name = "nightly deploy"
priority = "high"
batch = 1
[params]
LOG = "{log}"
SLEEP = "5"
TOKEN = {{ file = "token" }}
[labels]
change = "CHG-42"
team = "web"
""")
    code, job = job_json(cluster, "submitjob", "--wait", "--file", str(job_file), "--label", "team=ops",
                         "SLEEP=0")
    assert code == 0, job
    assert job["name"] == "nightly deploy" and job["priority"] == 10
    assert job["labels"] == {"change": "CHG-42", "team": "ops"}  # the command line wins
    assert job["params"]["SLEEP"] == "0" and job["params"]["TOKEN"] == "<secret>"  # type: ignore[index]
    assert job["rollout"]["batch"] == 1  # type: ignore[index]
    assert "token=s3cret" in job["tasks"][0]["stderr"]  # type: ignore[index]
    assert "s3cret" not in json.dumps(queue_rows(cluster, "jobs"))
    found = json.loads(cluster.cli("listjobs", "--json", "--label", "change=CHG-42").stdout)["jobs"]
    assert [j["job_id"] for j in found] == [job["job_id"]] and found[0]["name"] == "nightly deploy"
    assert json.loads(cluster.cli("listjobs", "--json", "--name", "other").stdout)["jobs"] == []
    bad = tmp_path / "bad.toml"
    bad.write_text('score = "step"\ntargets = ["p1.test"]\nbogus = 1\n')
    code, _, err = submit(cluster, "--file", str(bad))
    assert code == 2 and "bogus" in err and len(err.strip().splitlines()) == 1


def test_deletejob_forgets_a_finished_job_and_refuses_an_unfinished_one(make_cluster: MakeCluster,
                                                                        tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test"], audience_names=["ci.test"], conductor_settings={
        "audience": {"ci.test": {"scores": ["*"], "targets": ["*"]}}})
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    code, out, _ = submit(cluster, "step", f"LOG={log}", "SLEEP=30", "p1.test")
    running = out.strip()
    cluster.wait_for(lambda: runs(log), "the job running")
    refused = cluster.cli("deletejob", running)
    assert refused.returncode == 2 and "not finished" in refused.stderr
    other = cluster.cli("deletejob", running, config=cluster.remote_audience_config("ci.test"))
    assert other.returncode == 5  # another requester's job, no grant: not even there
    deleted = cluster.cli("deletejob", "--cancel", "--timeout", "30", running)
    assert deleted.returncode == 0, deleted.stderr
    assert cluster.cli("getstatus", running).returncode == 5
    assert [row for row in queue_rows(cluster, "jobs") if row["id"] == running] == []
    audit = [json.loads(line) for line in (cluster.state_dir / "audit.log").read_text().splitlines()]
    assert [(a["event"], a["decision"]) for a in audit if a["event"] == "delete"] == [
        ("delete", "rejected"), ("delete", "denied"), ("delete", "accepted")]


def test_retrying_ones_own_job_needs_the_policy_still_to_allow_running_it(make_cluster: MakeCluster,
                                                                          tmp_path: Path) -> None:
    me = f"user:{getpass.getuser()}"
    cluster = make_cluster(["p1.test"], conductor_settings={"policy": [{"name": "all", "requesters": ["*"]}]})
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    code, out, _ = submit(cluster, "--wait", "step", f"LOG={log}", "SLEEP=0", "FAIL_ON=p1.test", "p1.test")
    assert code == 1
    job_id = out.split()[0]
    text = cluster.conductor_config.read_text()  # first match wins: the deny goes first
    cluster.conductor_config.write_text(text.replace(
        "[[policy]]", f'[[policy]]\nname = "no-step"\neffect = "deny"\nrequesters = ["{me}"]\n'
                      'scores = ["step"]\nactions = ["run"]\n\n[[policy]]', 1))
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: "policy_reloaded" in cluster.log_text("conductor"), "the policy reloaded")
    refused = cluster.cli("retryjob", job_id)
    assert refused.returncode == 2 and "no-step" in refused.stderr, refused.stderr
    assert len(runs(log)) == 1


def test_groups_are_reread_on_sighup_and_a_drained_group_covers_hosts_added_later(
        make_cluster: MakeCluster) -> None:
    players = ["p1.test", "p2.test", "p3.test"]
    cluster = make_cluster(players, conductor_settings={"groups": {"web": ["p1.test"]}})
    assert cluster.cli("drain", "@web").returncode == 0

    def drained() -> dict[str, object]:
        listed = json.loads(cluster.cli("listplayers", "--json").stdout)
        return {p["name"]: p["drained"] for p in listed["players"]}
    assert drained() == {"p1.test": "@web", "p2.test": None, "p3.test": None}
    text = cluster.conductor_config.read_text()
    cluster.conductor_config.write_text(text.replace('web = ["p1.test"]', 'web = ["p1.test", "p3.test"]'))
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: drained()["p3.test"] == "@web", "the group re-read")
    listed = json.loads(cluster.cli("listplayers", "--json", "@web").stdout)
    assert [p["name"] for p in listed["players"]] == ["p1.test", "p3.test"]
