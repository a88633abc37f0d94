"""The example config files in examples/ are complete and load as they are documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from conductor.policy import parse_policy
from orchestra import config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_example_conductor_config_loads_with_its_documented_defaults() -> None:
    cfg = config.load_conductor(EXAMPLES / "conductor.toml")
    assert cfg.listen == "0.0.0.0:2258" and cfg.handshake_timeout == 30 and cfg.max_connections == 0
    assert cfg.metrics_listen == "" and cfg.metrics_tls is False  # metrics are off unless asked for
    assert cfg.tls.crl == Path("/etc/puppetlabs/puppet/ssl/crl.pem")
    policy = parse_policy(cfg.policy, cfg.groups, cfg.audience, cfg.path)
    assert [rule.name for rule in policy.rules] == ["no-reboots-on-db", "ops", "ops-admins"]
    assert policy.rules[2].actions == {"run", "read", "cancel"}
    assert policy.admits_cert("ci.example.com")


def test_the_example_player_config_loads_and_sets_every_key(tmp_path: Path) -> None:
    cfg = config.load_player(EXAMPLES / "player.toml")
    text = (EXAMPLES / "player.toml").read_text()
    documented = {line.split("=")[0].strip() for line in text.splitlines()
                  if "=" in line and not line.startswith(("#", "[", " "))}
    fields = {f.name for f in dataclasses.fields(cfg)} - {"path", "tls"}
    assert fields <= documented, f"missing from the example: {sorted(fields - documented)}"
    assert cfg.conductor_name == "conductor.example.com" and cfg.max_concurrent == 1
    assert cfg.metrics_listen == "" and cfg.metrics_tls is False


def test_the_example_conductor_config_sets_every_top_level_key() -> None:
    cfg = config.load_conductor(EXAMPLES / "conductor.toml")
    text = (EXAMPLES / "conductor.toml").read_text()
    documented = {line.lstrip("# ").split("=")[0].strip() for line in text.splitlines()
                  if "=" in line and not line.startswith(("[", " "))}
    fields = {f.name for f in dataclasses.fields(cfg)} - {"path", "tls", "policy", "groups", "audience"}
    assert fields <= documented, f"missing from the example: {sorted(fields - documented)}"


def test_the_example_audience_config_loads() -> None:
    cfg = config.load_audience(EXAMPLES / "audience.toml", explicit=True)
    assert cfg.socket == Path("/run/orchestra/conductor.sock") and cfg.conductor == ""
