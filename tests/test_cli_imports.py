"""The audience commands load only what their path needs.

Over the local Unix socket there is no TLS to set up, so a command must not load the
certificate parser (cryptography); nor do the commands log, so they must not load the
daemons' logging (structlog), nor anything of the daemons themselves. Each command runs
here as a real process against a real conductor and reports the modules it ended with;
the remote mTLS path is checked to load cryptography, so the report is known to see
modules that are imported lazily.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devtools.devcluster import Cluster
from tests.conftest import MakeCluster

# Runs an audience command's main() as its console script does, then writes the name of
# every module loaded by then, one a line, to the file named by its first argument.
REPORTER = """
import importlib, sys
report, module = sys.argv[1], sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
try:
    code = importlib.import_module(module).main()
finally:
    with open(report, "w") as out:
        out.write("\\n".join(sorted(sys.modules)))
raise SystemExit(code)
"""

COMMANDS = {"submitjob": "audience.submitjob", "getstatus": "audience.getstatus",
            "canceljob": "audience.canceljob", "listplayers": "audience.listplayers",
            "listjobs": "audience.listjobs", "retryjob": "audience.retryjob", "deletejob": "audience.deletejob",
            "drain": "audience.drain", "submitworkflow": "audience.submitworkflow",
            "schedule": "audience.schedule"}

# Packages (with their submodules) that no command on the local socket needs.
NOT_ON_LOCAL_SOCKET = ("cryptography", "structlog", "orchestra.log", "orchestra.db",
                       "orchestra.wire.player_pb2", "orchestra.wire.player_pb2_grpc",
                       "sqlite3", "conductor", "player",
                       # Tab completion's library: only a completion imports it.
                       "argcomplete")


def run_reporting(cluster: Cluster, report: Path, command: str, *args: str,
                  config: Path | None = None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run an audience command as a real process; return its result and loaded modules."""
    env = cluster.env()
    env["ORCHESTRA_CONFIG"] = str(config or cluster.audience_config)
    result = subprocess.run([sys.executable, "-c", REPORTER, str(report), COMMANDS[command], *args],
                            capture_output=True, text=True, env=env, timeout=120,
                            stdin=subprocess.DEVNULL)
    return result, set(report.read_text().splitlines())


def loaded_of(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_commands_on_the_local_socket_load_no_tls_logging_or_daemon_code(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test"])
    report = tmp_path / "modules"
    submitted, modules = run_reporting(cluster, report, "submitjob", "--wait", "--timeout", "30",
                                       "hello", "who=ops", "p1.test")
    assert submitted.returncode == 0, submitted.stderr
    assert loaded_of(modules, NOT_ON_LOCAL_SOCKET) == []
    job_id = submitted.stdout.splitlines()[0]

    calls: list[tuple[str, tuple[str, ...], int]] = [
        ("submitjob", ("--json", "hello", "p1.test"), 0),
        ("getstatus", (job_id,), 0),
        ("getstatus", ("--json", job_id), 0),
        ("getstatus", ("--wait", "--timeout", "30", job_id), 0),
        ("getstatus", ("0" * 32,), 5),
        ("canceljob", (job_id,), 0),
        ("listplayers", (), 0),
        ("listplayers", ("--json",), 0),
        ("listjobs", ("--json",), 0),
        ("retryjob", ("0" * 32,), 5),
        ("deletejob", ("0" * 32,), 5),
        ("drain", ("--json", "p1.test"), 0),
        ("getstatus", ("w" + "0" * 32,), 5),
        ("canceljob", ("w" + "0" * 32,), 5),
        ("schedule", ("list",), 0),
    ]
    for command, args, expected in calls:
        result, modules = run_reporting(cluster, report, command, *args)
        # The same answer as the command run the ordinary way.
        plain = cluster.cli(command, *args)
        assert (result.returncode, result.stderr) == (plain.returncode, plain.stderr), (command, args)
        assert result.returncode == expected, (command, args, result.stderr)
        if command == "getstatus":
            assert result.stdout == plain.stdout, (command, args)
        assert "audience.client" in modules and "grpc" in modules, (command, args)
        assert loaded_of(modules, NOT_ON_LOCAL_SOCKET) == [], (command, args)


def test_commands_over_mtls_load_the_certificate_parser(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test"], audience_names=["ops.test"], conductor_settings={
        "audience": {"ops.test": {"scores": ["*"], "targets": ["*"]}}})
    remote = cluster.remote_audience_config("ops.test")
    result, modules = run_reporting(cluster, tmp_path / "modules", "listplayers", config=remote)
    assert result.returncode == 0, result.stderr
    assert "p1.test" in result.stdout
    assert "cryptography.x509" in modules
    assert loaded_of(modules, ("structlog", "conductor", "player")) == []
