"""Plugins (orchestra/plugins.py): discovery and loading, the audit sinks, and the test
plugin package (tests/plugins, installed by ./test.sh) used by real daemons: its audit
sink and notifier configured in conductor.toml, its score interface on a player, and its
broken plugins stopping a start with one line."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from conductor.audit import SINKS, AuditLog, FileSink, SyslogSink
from conductor.notify import NOTIFIER_KIND
from devtools.devcluster import Cluster
from orchestra.errors import ConfigError, ExitCode, StartupError
from orchestra.plugins import Options, Registry, labels
from tests.conftest import MakeCluster, job_json

TEST_PLUGINS = "orchestra-testplugins"


@pytest.fixture
def test_plugins() -> None:
    """The test plugin package must be installed (./test.sh does it)."""
    try:
        metadata.distribution(TEST_PLUGINS)
    except metadata.PackageNotFoundError:
        message = f"{TEST_PLUGINS} is not installed: pip install -e tests/plugins (./test.sh does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def entry_point(name: str, value: str, group: str = "orchestra.audit_sinks") -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=value, group=group)


class Sink:
    """An audit sink kept in memory; ``fail`` makes record() raise."""

    def __init__(self, options: Mapping[str, Any], fail: bool = False) -> None:
        self.entries: list[dict[str, Any]] = []
        self.fail = fail
        self.closed = False

    def record(self, entry: Mapping[str, Any]) -> None:
        if self.fail:
            raise OSError("the sink's server is down")
        self.entries.append(dict(entry))

    def flush(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


# ---- discovery and loading, with entry points made here ----------------------------------


def test_an_entry_point_may_not_take_a_built_ins_name_nor_another_ones() -> None:
    with pytest.raises(StartupError) as raised:
        Registry(SINKS, {"file": Sink}, [entry_point("file", "elsewhere:Sink")])
    assert str(raised.value) == ("audit sink 'file' (entry point orchestra.audit_sinks:file = elsewhere:Sink from"
                                 " an unknown distribution) takes the name of the built-in audit sink 'file';"
                                 " rename or uninstall it")
    with pytest.raises(StartupError) as raised:
        Registry(SINKS, {}, [entry_point("kafka", "one:Sink"), entry_point("kafka", "two:Sink")])
    assert str(raised.value) == ("audit sink 'kafka' is defined twice: entry point orchestra.audit_sinks:kafka ="
                                 " one:Sink from an unknown distribution, and entry point"
                                 " orchestra.audit_sinks:kafka = two:Sink from an unknown distribution;"
                                 " uninstall one of them")
    # The same entry point seen twice (one distribution on two sys.path entries) is one.
    assert Registry(SINKS, {}, [entry_point("kafka", "one:Sink")] * 2).names() == ["kafka"]


def test_an_unknown_name_lists_the_names_there_are() -> None:
    registry = Registry(SINKS, {"file": Sink, "syslog": Sink}, [entry_point("kafka", "k:Sink")])
    with pytest.raises(ConfigError) as raised:
        registry.create("splunk", {}, "conductor.toml: [[audit_sinks]] #2 (splunk)")
    assert str(raised.value) == ("conductor.toml: [[audit_sinks]] #2 (splunk): unknown audit sink 'splunk';"
                                 " available: file, kafka, syslog")
    assert raised.value.exit_code == ExitCode.USAGE


def test_an_entry_point_that_cannot_be_imported_is_named_with_the_error() -> None:
    registry = Registry(SINKS, {}, [entry_point("gone", "no_such_module_anywhere:Sink")])
    with pytest.raises(StartupError) as raised:
        registry.create("gone", {}, "here")
    assert str(raised.value) == ("here: audit sink 'gone' (entry point orchestra.audit_sinks:gone ="
                                 " no_such_module_anywhere:Sink from an unknown distribution) cannot be loaded:"
                                 " ModuleNotFoundError: No module named 'no_such_module_anywhere'")
    assert raised.value.exit_code == ExitCode.FAILED


class NotANotifier:
    def __init__(self, options: Mapping[str, Any]) -> None:
        pass

    def notify(self, event: Mapping[str, Any]) -> None:  # not async: it would block the loop
        pass


def test_an_object_without_the_protocols_members_is_refused() -> None:
    sinks = Registry(SINKS, {"half": lambda options: object()}, [])
    with pytest.raises(StartupError, match=r"'half' \(built-in\) is incomplete: it has no method record\(\), "
                                           r"no method flush\(\), no method close\(\)"):
        sinks.create("half", {})
    notifiers = Registry(NOTIFIER_KIND, {"sync": NotANotifier}, [])
    with pytest.raises(StartupError, match=r"async method notify\(\) \(it is not a coroutine function\), "
                                           r"no method close\(\)"):
        notifiers.create("sync", {})


def test_options_a_factory_refuses_are_a_config_error_naming_the_table_anything_else_a_startup_error() -> None:
    def strict(options: dict[str, Any]) -> Sink:
        Options(options, "strict sink").finish()
        return Sink(options)

    def crashing(options: dict[str, Any]) -> Sink:
        raise KeyError("oops")
    registry = Registry(SINKS, {"strict": strict, "crashing": crashing}, [])
    with pytest.raises(ConfigError) as refused:
        registry.create("strict", {"colour": "red"}, "FILE: [[audit_sinks]] #1 (strict)")
    assert str(refused.value) == ("FILE: [[audit_sinks]] #1 (strict): colour: unknown option"
                                  " (the strict sink takes no options)")
    with pytest.raises(StartupError) as failed:
        registry.create("crashing", {}, "FILE: [[audit_sinks]] #2 (crashing)")
    assert str(failed.value) == ("FILE: [[audit_sinks]] #2 (crashing): audit sink 'crashing' (built-in)"
                                 " failed to start: KeyError: 'oops'")


def test_options_are_typed_and_checked() -> None:
    read = Options({"timeout": True, "events": ["job", 3], "headers": {"A": 1}, "path": "rel/file"}, "x")
    with pytest.raises(ValueError, match="timeout: must be a number, not True"):
        read.number("timeout", 10, 0, 60)
    with pytest.raises(ValueError, match="events: must be a list of strings"):
        read.strings("events", ())
    with pytest.raises(ValueError, match="headers.A: must be a string, not 1"):
        read.table("headers")
    assert read.path("path", Path("/etc/orchestra")) == Path("/etc/orchestra/rel/file")
    with pytest.raises(ValueError, match="url: is required"):
        read.string("url")


def test_several_plugins_of_one_name_are_told_apart() -> None:
    assert labels(["webhook", "testfile", "webhook", "webhook"]) == ["webhook", "testfile", "webhook#2", "webhook#3"]


def test_the_installed_test_plugins_are_discovered_with_their_distribution(test_plugins: None) -> None:
    registry = Registry(SINKS, {"file": Sink})
    assert {"file", "testfile", "broken_import", "broken_start"} <= set(registry.names())
    assert registry.sources["testfile"].describe().startswith(
        f"entry point orchestra.audit_sinks:testfile = orchestra_testplugins.sinks:FileCopySink"
        f" from distribution {TEST_PLUGINS} ")


# ---- the audit log's sinks ------------------------------------------------------------


def test_a_failing_sink_never_fails_the_record_and_is_counted(tmp_path: Path) -> None:
    working, failing = Sink({}), Sink({}, fail=True)
    audit = AuditLog(tmp_path / "audit.log", sinks=[("down", failing), ("memory", working)])
    audit.record("submit", "accepted", job_id="j1", params=None)
    audit.record("submit", "accepted", job_id="j2")
    assert [entry["job_id"] for entry in working.entries] == ["j1", "j2"]
    assert "params" not in working.entries[0]  # fields without a value are left out
    assert audit.write_failures == 2 and audit.failures == {"down": 2}
    assert len(audit.backlog) == 0 and audit.flush()
    audit.close()
    assert working.closed and failing.closed
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [(line["event"], line["job_id"]) for line in lines] == [("submit", "j1"), ("submit", "j2")]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket's path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="orc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def datagrams(sock: socket.socket, until: float) -> Iterator[bytes]:
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            yield sock.recv(65536)
        except TimeoutError:
            return


def test_the_syslog_sink_sends_one_rfc3164_message_per_entry(short_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(short_dir / "log"))
        sink = SyslogSink.from_options({"address": str(short_dir / "log"), "facility": "local3", "tag": "orch"})
        sink.record({"ts": 1.5, "event": "submit", "decision": "accepted"})
        data = server.recv(65536).decode()
        sink.close()
    header, _, body = data.partition(": ")
    assert header.startswith("<158>")  # local3 (19) * 8 + info (6)
    assert header.endswith(f" orch[{os.getpid()}]") and len(header.split()) == 4  # no hostname to a local daemon
    assert json.loads(body) == {"ts": 1.5, "event": "submit", "decision": "accepted"}


def test_the_syslog_sink_sends_over_udp_with_its_hostname() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        sink = SyslogSink.from_options({"address": f"127.0.0.1:{server.getsockname()[1]}"})
        sink.record({"event": "result"})
        data = server.recv(65536).decode()
        sink.close()
    assert data.startswith("<86>")  # authpriv (10) * 8 + info (6)
    assert f" {socket.gethostname()} orchestra-audit[{os.getpid()}]: " in data


@pytest.mark.parametrize("options, message", [
    ({"facility": "nosuch"}, "facility: must be one of auth, authpriv, console, cron, daemon"),
    ({"tag": "has space"}, "tag: must be 1 to 32 letters"),
    ({"address": "nowhere"}, "address: must be a unix socket path or HOST:PORT, not 'nowhere'"),
    ({"adress": "/dev/log"}, "adress: unknown option (the syslog sink takes address, facility, tag)"),
])
def test_the_syslog_sinks_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        SyslogSink.from_options(options)
    assert str(raised.value).startswith(message)


def test_a_syslog_socket_that_is_not_there_stops_the_start(short_dir: Path) -> None:
    with pytest.raises(StartupError, match=f"cannot reach syslog at {short_dir}/none: No such file or directory"):
        SyslogSink.from_options({"address": str(short_dir / "none")})


def test_the_file_sink_takes_relative_paths_from_the_config_files_directory(tmp_path: Path) -> None:
    sink = FileSink.from_options({"path": "logs/audit.jsonl"}, tmp_path / "default.log", tmp_path)
    assert sink.path == tmp_path / "logs" / "audit.jsonl"
    sink.close()


# ---- real daemons with the test plugin package -------------------------------------------


def events_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_conductor_hands_entries_and_events_to_installed_plugins(
        make_cluster: MakeCluster, tmp_path: Path, test_plugins: None) -> None:
    copy, events = tmp_path / "audit-copy.jsonl", tmp_path / "events.jsonl"
    cluster = make_cluster(conductor_settings={
        "audit_sinks": [{"name": "file"}, {"name": "testfile", "path": str(copy)}],
        "notifiers": [{"name": "testfile", "path": str(events), "events": ["job"]}]})
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "--name", "greeting",
                         "--label", "team=ops", "hello", "who=ops", "p1.test")
    assert code == 0, job
    job_id = job["job_id"]

    cluster.wait_for(lambda: any(event["job_id"] == job_id for event in events_of(events)), "the job.finished event")
    [event] = events_of(events)
    assert event.pop("created_at").endswith("Z") and event.pop("finished_at").endswith("Z")
    assert event == {"event": "job.finished", "job_id": job_id, "status": "ok", "score": "hello", "scope": "all-of",
                     "requester": event["requester"], "name": "greeting", "labels": {"team": "ops"},
                     "counts": {"ok": 1}}
    copied = [entry for entry in events_of(copy) if entry.get("job_id") == job_id]
    assert {"submit", "dispatch", "result"} <= {entry["event"] for entry in copied}
    # The built-in file sink, listed too, still writes the audit_log.
    assert copied == [json.loads(line) for line in (cluster.state_dir / "audit.log").read_text().splitlines()
                      if json.loads(line).get("job_id") == job_id]


def start_failure(cluster: Cluster, daemon: str, config: Path,
                  env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Run a daemon that is expected not to start: its exit code and its one line's error."""
    result = subprocess.run([sys.executable, "-m", f"{daemon}.main", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, env={**cluster.env(), **(env or {})})
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    event = json.loads(line)
    assert event["event"] == "daemon_failed" and event["exit_code"] == result.returncode
    return result.returncode, str(event["error"])


DIST = f"from distribution {TEST_PLUGINS} 0.1.0"


@pytest.mark.parametrize("key, table, code, words", [
    ("audit_sinks", {"name": "nosuch"}, ExitCode.USAGE,
     ["[[audit_sinks]] #1 (nosuch): unknown audit sink 'nosuch'; available: broken_import, broken_start,"
      " file, not_a_sink, syslog, testfile"]),
    ("audit_sinks", {"name": "broken_import"}, ExitCode.FAILED,
     ["[[audit_sinks]] #1 (broken_import): audit sink 'broken_import' (entry point"
      f" orchestra.audit_sinks:broken_import = orchestra_testplugins.broken:Sink {DIST}) cannot be loaded:"
      " ImportError: orchestra_testplugins.broken cannot be imported (on purpose)"]),
    ("audit_sinks", {"name": "broken_start"}, ExitCode.FAILED,
     ["audit sink 'broken_start' (entry point orchestra.audit_sinks:broken_start", DIST,
      "failed to start: RuntimeError: the broken_start sink fails to start (on purpose)"]),
    ("audit_sinks", {"name": "not_a_sink"}, ExitCode.FAILED,
     ["is incomplete: it has no method flush(), no method close()"]),
    ("audit_sinks", {"name": "testfile"}, ExitCode.USAGE,
     ["[[audit_sinks]] #1 (testfile): path: is required (a string)"]),
    ("notifiers", {"name": "nosuch"}, ExitCode.USAGE,
     ["[[notifiers]] #1 (nosuch): unknown notifier 'nosuch'; available: broken_import, broken_start,"
      " testfile, webhook"]),
    ("notifiers", {"name": "broken_import"}, ExitCode.FAILED,
     [f"notifier 'broken_import' (entry point orchestra.notifiers:broken_import = orchestra_testplugins.broken:Notifier"
      f" {DIST}) cannot be loaded: ImportError"]),
    ("notifiers", {"name": "broken_start"}, ExitCode.FAILED,
     ["failed to start: RuntimeError: the broken_start notifier fails to start (on purpose)"]),
    ("notifiers", {"name": "webhook", "url": "http://hooks.example.com/orchestra"}, ExitCode.USAGE,
     ["[[notifiers]] #1 (webhook): url: plain http is allowed only to a loopback host"]),
    ("notifiers", {"name": "webhook", "url": "https://hooks.example.com/", "timout": 3}, ExitCode.USAGE,
     ["[[notifiers]] #1 (webhook): timout: unknown option (the webhook notifier takes backoff, ca, cert,"]),
])
def test_a_missing_or_broken_plugin_stops_the_conductor_with_one_line(
        make_cluster: MakeCluster, test_plugins: None, key: str, table: dict[str, Any], code: int,
        words: list[str]) -> None:
    cluster = make_cluster(start=False, conductor_settings={key: [table]})
    exit_code, error = start_failure(cluster, "conductor", cluster.conductor_config)
    assert exit_code == code
    assert error.startswith(f"{cluster.conductor_config.absolute()}: [[{key}]] #1 ({table['name']}): ")
    for word in words:
        assert word in error


def test_a_player_runs_a_score_through_an_installed_interface(make_cluster: MakeCluster, test_plugins: None) -> None:
    cluster = make_cluster(start=False)
    # kv0: params as NUL-terminated KEY=VALUE records on stdin, the response likewise on stdout.
    cluster.add_score("kv", f"""#!{sys.executable}
import os, sys
records = [r.decode() for r in sys.stdin.buffer.read().split(b"\\0") if r]
sys.stdout.buffer.write(b"".join(f"GOT_{{r}}\\0".encode() for r in records))
sys.stdout.buffer.write(f"IN_ENV={{'ORC_WHO' in os.environ}}\\0".encode())
""", "interface kv0\n")
    cluster.start()
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "kv", "who=ops", "note=a b", "p1.test")
    assert code == 0, job
    assert job["tasks"][0]["response"] == {  # type: ignore[index]
        "GOT_NOTE": "a b", "GOT_WHO": "ops", "IN_ENV": "False"}
    [score] = [s for p in cluster.players() or [] for s in p.scores if s.name == "kv"]
    assert score.interface == "kv0"


def test_a_broken_interface_stops_the_player_with_one_line(make_cluster: MakeCluster, test_plugins: None) -> None:
    cluster = make_cluster(start=False)
    exit_code, error = start_failure(cluster, "player", cluster.player_dir("p1.test") / "player.toml",
                                     env={"ORCHESTRA_TESTPLUGINS_BREAK": "1"})
    assert exit_code == ExitCode.FAILED
    assert error == ("interface 'broken' (entry point orchestra.interfaces:broken ="
                     f" orchestra_testplugins.interfaces:Broken {DIST}) failed to start:"
                     " RuntimeError: the broken interface fails to start (on purpose)")


def test_the_syslog_sink_of_a_real_conductor_and_a_syslog_that_goes_away(
        make_cluster: MakeCluster, short_dir: Path) -> None:
    address = short_dir / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(address))
        cluster = make_cluster(conductor_settings={"audit_sinks": [
            {"name": "syslog", "address": str(address), "facility": "local3", "tag": "orch-test"}]})
        code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")
        assert code == 0, job
        pid = cluster.conductor().popen.pid  # type: ignore[union-attr]
        entries = []
        for data in datagrams(server, time.monotonic() + 10):
            header, _, body = data.decode().partition(": ")
            assert header.startswith("<158>") and header.endswith(f" orch-test[{pid}]")
            entries.append(json.loads(body))
            if any(e.get("job_id") == job["job_id"] and e["event"] == "result" for e in entries):
                break
        assert {"submit", "dispatch", "result"} <= {e["event"] for e in entries if e.get("job_id") == job["job_id"]}
        assert not (cluster.state_dir / "audit.log").exists()  # only the sinks listed
    address.unlink()  # syslog is gone: auditing fails, the job does not
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")
    assert code == 0 and job["status"] == "ok"
    assert '"audit_sink_failed"' in cluster.log_text("conductor")
