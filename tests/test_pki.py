"""orchestra-pki writes a Puppet-style ssl directory with private keys kept private."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from devtools import pki
from orchestra.tls import certname_of


def test_init_writes_the_puppet_layout_with_private_keys_0600(tmp_path: Path) -> None:
    root = tmp_path / "ssl"
    assert pki.main(["init", str(root), "--conductor", "c.test", "--player", "p1.test", "p2.test",
                     "--audience", "ops"]) == 0
    for name in ["c.test", "p1.test", "p2.test", "ops"]:
        cert = x509.load_pem_x509_certificate((root / "certs" / f"{name}.pem").read_bytes())
        assert certname_of(cert) == name
        key = root / "private_keys" / f"{name}.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "private_keys").stat().st_mode) == 0o700
    crl = x509.load_pem_x509_crl((root / "crl.pem").read_bytes())
    assert len(list(crl)) == 0
    ops = x509.load_pem_x509_certificate((root / "certs" / "ops.pem").read_bytes())
    usages = ops.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # Refuses to replace a CA; refuses path-like names.
    assert pki.main(["init", str(root), "--conductor", "c.test"]) == 2
    assert pki.main(["init", str(tmp_path / "other"), "--conductor", "../evil"]) == 2


def test_revoke_adds_the_serial_to_the_crl(tmp_path: Path) -> None:
    root = tmp_path / "ssl"
    pki.init(root, "c.test", ["p1.test"], [])
    assert pki.main(["revoke", str(root), "p1.test"]) == 0
    serial = x509.load_pem_x509_certificate((root / "certs" / "p1.test.pem").read_bytes()).serial_number
    crl = x509.load_pem_x509_crl((root / "crl.pem").read_bytes())
    assert [entry.serial_number for entry in crl] == [serial]


def test_issue_refuses_to_replace_a_certificate_and_key_unless_forced(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ssl"
    pki.init(root, "c.test", ["p1.test"], [])
    cert, key = root / "certs" / "p1.test.pem", root / "private_keys" / "p1.test.pem"
    before = cert.read_bytes(), key.read_bytes()
    capsys.readouterr()
    assert pki.main(["issue", str(root), "p1.test", "--role", "player"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"orchestra-pki: {cert} already exists; refusing to replace "
                                 "p1.test's certificate and key (--force replaces them)\n")
    assert (cert.read_bytes(), key.read_bytes()) == before
    # A key left without its certificate is not replaced either.
    cert.unlink()
    assert pki.main(["issue", str(root), "p1.test", "--role", "player"]) == 2
    assert key.read_bytes() == before[1]
    assert pki.main(["issue", str(root), "p1.test", "--role", "player", "--force"]) == 0
    assert key.read_bytes() != before[1]
    assert certname_of(x509.load_pem_x509_certificate(cert.read_bytes())) == "p1.test"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # A new name needs no --force.
    assert pki.main(["issue", str(root), "ops.test", "--role", "audience"]) == 0


def test_every_subcommand_and_option_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = pki._parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {c.dest for c in commands._choices_actions} == {"init", "issue", "revoke"}
    assert all(c.help for c in commands._choices_actions)
    for name, sub in commands.choices.items():
        undocumented = [a.dest for a in sub._actions if not a.help or a.help == argparse.SUPPRESS]
        assert undocumented == [], name
    with pytest.raises(SystemExit) as done:
        pki.main(["issue", "--help"])
    assert done.value.code == 0
    assert "--force" in capsys.readouterr().out
