"""The live demo: dev PKI, a conductor and three players on loopback; jobs, a rollout, a
workflow and a schedule, and the web view.

Run by ``./demo.sh``. Everything lives under ./demo-run and is stopped at the end
(``./demo.sh --keep``: once Ctrl-C is pressed, so the web view can be looked at).
"""

from __future__ import annotations

import argparse
import os
import shlex
import ssl
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devtools.devcluster import CONDUCTOR_NAME, REPO_ROOT, Cluster, free_port

PLAYERS = ["alpha.orchestra.test", "beta.orchestra.test", "gamma.orchestra.test"]
# The certificate a browser presents to the web view: it may read every job (the demo's
# jobs are submitted on the local socket, as the user running it).
OPERATOR = "operator.orchestra.test"
DEMO_POLICY = [
    {"name": "demo-everyone", "requesters": ["*"], "scores": ["*"], "targets": ["*"], "actions": ["run", "drain"]},
    {"name": "demo-web-reads-all", "requesters": [f"cert:{OPERATOR}"], "scores": ["*"], "targets": ["*"],
     "actions": ["read"]},
]
WORKFLOW = """name = "greetings"
[steps.greet]
score = "hello"
targets = ["{first}"]
params = {{ WHO = "demo" }}
[steps.answer]
after = ["greet"]
score = "hello"
targets = ["{second}"]
params = {{ WHO = "{{{{ steps.greet.response.player }}}}" }}
"""


# Prints a few lines with pauses, for getstatus --follow to show them as they come.
COUNTDOWN = """#!/bin/sh
for n in 3 2 1; do echo "$n on $ORC_PLAYER"; sleep 0.4; done
echo "liftoff" >&2
"""


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(cluster: Cluster, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run an installed console script the way an operator would, and show it."""
    say(f"\n$ {shlex.join(argv)}")
    env = {**cluster.env(), "ORCHESTRA_CONFIG": str(cluster.audience_config)}
    bindir = Path(sys.executable).parent
    result = subprocess.run([str(bindir / argv[0]), *argv[1:]], capture_output=True, text=True,
                            env=env, timeout=120)
    sys.stdout.write(result.stdout)
    sys.stdout.write(result.stderr)
    say(f"(exit status {result.returncode})")
    return result


def show_metrics(address: str) -> None:
    """What Prometheus would scrape from the conductor: its own metrics, the job counts first."""
    say(f"\n$ curl -s http://{address}/metrics | grep ^orchestra_conductor_  (a few of them)")
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    wanted = ("orchestra_conductor_jobs_", "orchestra_conductor_players_", "orchestra_conductor_tasks_ended",
              "orchestra_conductor_queue_depth")
    say("\n".join(line for line in lines if line.startswith(wanted) and not line.endswith(" 0.0")))


def show_web(cluster: Cluster) -> None:
    """The web view's address, how to load the operator's certificate into a browser, and
    one page of it fetched with that certificate."""
    ssl_dir = cluster.ssl.root
    say(f"\nThe web view: {cluster.web_url} (HTTPS; only a client certificate of the CA gets in)")
    say(f"  1. orchestra-pki export {ssl_dir} {OPERATOR} --p12 operator.p12   # asks for a password")
    say("  2. import operator.p12 into the browser (its certificate settings: \"Your certificates\" > Import)")
    say(f"  3. the conductor's certificate names {CONDUCTOR_NAME}: trust {cluster.ssl.ca_cert} as an"
        f" authority and open https://{CONDUCTOR_NAME}:{cluster.web_port}/ with '127.0.0.1 {CONDUCTOR_NAME}'"
        " in /etc/hosts (or accept the browser's warning about 127.0.0.1)")
    context = ssl.create_default_context(cafile=str(cluster.ssl.ca_cert))
    context.check_hostname = False  # 127.0.0.1 is not the name in the certificate
    context.load_cert_chain(str(cluster.ssl.cert(OPERATOR)), str(cluster.ssl.key(OPERATOR)))
    say(f"\n$ curl --cert {OPERATOR}.pem --key ... {cluster.web_url}jobs   (the jobs it lists)")
    with urllib.request.urlopen(f"{cluster.web_url}jobs", timeout=10, context=context) as reply:
        page = reply.read().decode()
    rows = page.count('<tr id="job-')
    say(f"{reply.status}: {rows} jobs listed, newest first")


def main() -> int:
    parser = argparse.ArgumentParser(prog="demo.sh", description="The live demo of Orchestra on loopback.")
    parser.add_argument("--keep", action="store_true",
                        help="keep the conductor and players running at the end, until Ctrl-C")
    args = parser.parse_args()
    root = Path(os.environ.get("ORCHESTRA_DEMO_DIR", REPO_ROOT / "demo-run"))
    shutil.rmtree(root, ignore_errors=True)
    say(f"Setting up a dev PKI, a conductor and {len(PLAYERS)} players under {root}")
    metrics = f"127.0.0.1:{free_port()}"
    cluster = Cluster(root, PLAYERS, [OPERATOR], log_level="info", web=True,
                      conductor_settings={"metrics_listen": metrics, "policy": DEMO_POLICY,
                                          "audience": {OPERATOR: {"scores": ["*"], "targets": ["*"]}}})
    try:
        cluster.start()
        say(f"conductor listening on 127.0.0.1:{cluster.port} (mTLS), audience socket {cluster.socket}")
        say(f"web view on {cluster.web_url} (see the end for how to open it in a browser)")
        say(f"players connected: {', '.join(sorted(cluster.connected()))}")
        run(cluster, "listplayers")
        submitted = run(cluster, "submitjob", "--all-of", "hello", "who=operator", *PLAYERS)
        job_id = submitted.stdout.strip()
        run(cluster, "getstatus", "--wait", "--timeout", "30", job_id)
        run(cluster, "submitjob", "--one-of", "--wait", "--timeout", "30", "uptime", *PLAYERS)
        run(cluster, "submitjob", "--all-of", "--wait", "--timeout", "30", "fail", "code=7",
            PLAYERS[0], PLAYERS[1])
        say("Live output: each host's lines as its score prints them, then the report")
        cluster.add_score("countdown", COUNTDOWN, "interface env\ntimeout 60\n")
        counting = run(cluster, "submitjob", "--all-of", "countdown", *PLAYERS[:2])
        run(cluster, "getstatus", "--follow", counting.stdout.strip())
        say("A rollout: one canary first, then at most two hosts at a time; one host drained")
        run(cluster, "drain", "--reason", "maintenance", PLAYERS[-1])
        rollout = run(cluster, "submitjob", "--all-of", "--canary", "1", "--batch", "2", "--name",
                      "demo rollout", "hello", "who=fleet", *PLAYERS)
        run(cluster, "listplayers")
        run(cluster, "undrain", PLAYERS[-1])
        run(cluster, "getstatus", "--wait", "--timeout", "30", rollout.stdout.strip())
        say("A workflow: the second step greets the host the first step's response names")
        workflow = root / "greetings.toml"
        workflow.write_text(WORKFLOW.format(first=PLAYERS[0], second=PLAYERS[1]))
        run(cluster, "submitworkflow", "--wait", "--timeout", "60", str(workflow))
        say("A schedule: the same job every 2 seconds, as its owner, until removed")
        job = root / "hello.toml"
        job.write_text(f'score = "hello"\ntargets = ["{PLAYERS[2]}"]\nparams = {{ WHO = "schedule" }}\n')
        run(cluster, "schedule", "add", "greet", "--cron", "*/2 * * * * *", "--file", str(job))
        time.sleep(5)
        run(cluster, "schedule", "list")
        run(cluster, "schedule", "remove", "greet")
        run(cluster, "listjobs", "--label", "schedule=greet")
        run(cluster, "listjobs")
        run(cluster, "listjobs", "--state", "failed", "--state", "partial_fail")
        show_metrics(metrics)
        show_web(cluster)
        if args.keep:
            say("\nStill running: look around, then press Ctrl-C to stop.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
        say(f"\nStopped. Logs are in {root / 'logs'}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
