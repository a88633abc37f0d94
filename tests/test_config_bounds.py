"""Config loading: upper bounds of the player's sizes, and paths made absolute at load."""

from __future__ import annotations

import os
from typing import Any
from pathlib import Path

import pytest

from devtools.devcluster import write_toml
from orchestra.config import (
    MAX_CONCURRENT, MAX_OUTPUT_FILE_BYTES, MAX_OUTPUT_TAIL_BYTES, MAX_RESPONSE_BYTES,
    load_audience, load_conductor, load_player,
)
from orchestra.errors import ConfigError, ExitCode
from orchestra.outcome import TaskOutcome
from orchestra.params import OUTPUT_TRUNCATED_MARKER
from orchestra.tls import MAX_MESSAGE_BYTES
from orchestra.wire import player_pb2
from player import runner

TLS = {"ca": "ssl/ca.pem", "cert": "ssl/cert.pem", "key": "ssl/key.pem"}


def player_toml(path: Path, **settings: object) -> Path:
    return write_toml(path, {"conductor": "conductor.test:2258", **settings}, TLS)


@pytest.mark.parametrize("key, bound", [
    ("max_concurrent", MAX_CONCURRENT),
    ("output_tail_bytes", MAX_OUTPUT_TAIL_BYTES),
    ("response_max_bytes", MAX_RESPONSE_BYTES),
    ("max_output_bytes", MAX_OUTPUT_FILE_BYTES),
])
def test_player_sizes_above_their_bound_are_config_errors_naming_file_key_and_bound(
        tmp_path: Path, key: str, bound: int) -> None:
    path = player_toml(tmp_path / "player.toml", **{key: bound + 1})
    with pytest.raises(ConfigError) as caught:
        load_player(path)
    assert str(caught.value) == f"{path}: {key}: must be <= {bound}, not {bound + 1}"
    assert caught.value.exit_code == ExitCode.USAGE
    assert getattr(load_player(player_toml(path, **{key: bound})), key) == bound


def test_the_bounds_fit_the_largest_result_well_under_the_message_limit(tmp_path: Path) -> None:
    """Both tails and the response at their bounds, the response made of what grows most
    when decoded (bytes that are not UTF-8 become U+FFFD, 3 bytes each), in one TaskResult."""
    limits = runner.Limits(default_timeout=1, kill_grace=1, output_tail_bytes=MAX_OUTPUT_TAIL_BYTES,
                           max_output_bytes=MAX_OUTPUT_FILE_BYTES, response_max_bytes=MAX_RESPONSE_BYTES)
    files = runner.TaskFiles(tmp_path, "t1")
    out_fd, err_fd = files.create()
    os.write(out_fd, b"\xff" * (2 * MAX_OUTPUT_TAIL_BYTES))
    os.write(err_fd, b"x" * (2 * MAX_OUTPUT_TAIL_BYTES))
    os.close(out_fd)
    os.close(err_fd)
    # Distinct keys, values of undecodable bytes: the map grows the most per byte read.
    lines, size, number = [], 0, 0
    while size <= MAX_RESPONSE_BYTES:
        line = b"k%d=" % number + b"\xff" * 60 + b"\n"
        lines.append(line)
        size += len(line)
        number += 1
    files.response.write_bytes(b"".join(lines))
    outcome = runner.collect(files, "env", limits, TaskOutcome(exit_code=0, reason="r" * 1000))
    assert outcome.stdout_truncated and outcome.response_truncated
    assert len(outcome.stdout) == len(OUTPUT_TRUNCATED_MARKER) + MAX_OUTPUT_TAIL_BYTES
    message = runner.task_result("t" * 32, 1, player_pb2.ENDING_OK, outcome)
    assert message.ByteSize() < MAX_MESSAGE_BYTES * 3 // 4


def test_relative_paths_are_absolute_from_the_config_files_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc" / "hosts").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    player_toml(tmp_path / "etc" / "hosts" / "player.toml", spool_dir="spool",
                scores_dir="../scores")
    write_toml(tmp_path / "etc" / "conductor.toml", {
        "state_dir": "state", "players_file": "players", "audience_socket": "run/c.sock",
    }, {**TLS, "crl": "ssl/crl.pem"})
    write_toml(tmp_path / "etc" / "audience.toml", {"socket": "run/c.sock"}, None)
    monkeypatch.chdir(elsewhere)
    etc = tmp_path / "etc"

    player = load_player(Path("../etc/hosts/player.toml"))
    assert player.path == elsewhere / "../etc/hosts/player.toml"
    assert player.spool_dir == elsewhere / "../etc/hosts/spool"
    assert player.scores_dir == elsewhere / "../etc/hosts/../scores"
    assert player.tls.cert == elsewhere / "../etc/hosts/ssl/cert.pem"
    conductor = load_conductor(Path("../etc/conductor.toml"))
    audience = load_audience(Path("../etc/audience.toml"), explicit=True)
    paths = [player.path, player.spool_dir, player.scores_dir, player.tls.ca, player.tls.cert,
             player.tls.key, conductor.path, conductor.state_dir, conductor.players_file,
             conductor.audience_socket, conductor.audit_log, conductor.tls.ca, conductor.tls.cert,
             conductor.tls.key, conductor.tls.crl, audience.path, audience.socket]
    assert all(p is not None and p.is_absolute() for p in paths), paths
    assert conductor.state_dir.resolve() == etc / "state"
    assert conductor.audit_log.resolve() == etc / "state" / "audit.log"
    assert conductor.tls.crl is not None and conductor.tls.crl.resolve() == etc / "ssl" / "crl.pem"
    assert audience.socket.resolve() == etc / "run" / "c.sock"
    # Errors still name the file as it was given.
    bad = player_toml(etc / "bad.toml", max_concurrent=0)
    with pytest.raises(ConfigError, match=r"^\.\./etc/bad\.toml: max_concurrent: must be >= 1"):
        load_player(Path(os.path.relpath(bad)))


def conductor_toml(path: Path, **settings: object) -> Path:
    return write_toml(path, settings, TLS)


@pytest.mark.parametrize("load, write", [(load_conductor, conductor_toml), (load_player, player_toml)])
def test_metrics_are_off_unless_a_listener_is_configured(tmp_path: Path, load: Any, write: Any) -> None:
    cfg = load(write(tmp_path / "daemon.toml"))
    assert cfg.metrics_listen == "" and cfg.metrics_tls is False


@pytest.mark.parametrize("listen", ["127.0.0.1:9258", "127.1.2.3:9258", "[::1]:9258", "localhost:9258"])
@pytest.mark.parametrize("load, write", [(load_conductor, conductor_toml), (load_player, player_toml)])
def test_plain_metrics_may_listen_on_loopback(tmp_path: Path, load: Any, write: Any, listen: str) -> None:
    cfg = load(write(tmp_path / "daemon.toml", metrics_listen=listen))
    assert cfg.metrics_listen == listen and cfg.metrics_tls is False


@pytest.mark.parametrize("listen", ["0.0.0.0:9258", "[::]:9258", "10.1.2.3:9258", "metrics.example.com:9258"])
@pytest.mark.parametrize("load, write", [(load_conductor, conductor_toml), (load_player, player_toml)])
def test_metrics_beyond_loopback_need_tls(tmp_path: Path, load: Any, write: Any, listen: str) -> None:
    path = write(tmp_path / "daemon.toml", metrics_listen=listen)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == (f"{path}: metrics_listen: {listen!r} is not a loopback address: serving metrics"
                                 " beyond this host needs metrics_tls = true")
    assert caught.value.exit_code == ExitCode.USAGE
    cfg = load(write(path, metrics_listen=listen, metrics_tls=True))
    assert cfg.metrics_listen == listen and cfg.metrics_tls is True


@pytest.mark.parametrize("settings, problem", [
    ({"metrics_listen": "9258"}, "metrics_listen: must be HOST:PORT, not '9258'"),
    ({"metrics_listen": "127.0.0.1:0"}, "metrics_listen: must be HOST:PORT, not '127.0.0.1:0'"),
    ({"metrics_listen": 9258}, "metrics_listen: must be a string, not 9258"),
    ({"metrics_listen": "127.0.0.1:9258", "metrics_tls": "yes"}, "metrics_tls: must be true or false, not 'yes'"),
    ({"metrics_tls": 1}, "metrics_tls: must be true or false, not 1"),
])
@pytest.mark.parametrize("load, write", [(load_conductor, conductor_toml), (load_player, player_toml)])
def test_bad_metrics_settings_are_config_errors_naming_the_key(
        tmp_path: Path, load: Any, write: Any, settings: dict[str, object], problem: str) -> None:
    path = write(tmp_path / "daemon.toml", **settings)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: {problem}"
