"""orchestra-pki writes a Puppet-style ssl directory with private keys kept private."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import stat
import subprocess
import sys
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
    parser = pki.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {c.dest for c in commands._choices_actions} == {"init", "issue", "revoke", "export"}
    assert all(c.help for c in commands._choices_actions)
    for name, sub in commands.choices.items():
        undocumented = [a.dest for a in sub._actions if not a.help or a.help == argparse.SUPPRESS]
        assert undocumented == [], name
    with pytest.raises(SystemExit) as done:
        pki.main(["issue", "--help"])
    assert done.value.code == 0
    assert "--force" in capsys.readouterr().out


def pki_json(*args: str) -> dict[str, object]:
    """Run orchestra-pki as a real process with --json; the one object it prints."""
    result = subprocess.run([sys.executable, "-m", "devtools.pki", *args], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stderr) == (0, ""), result
    report: dict[str, object] = json.loads(result.stdout)
    return report


def check_certificate(entry: dict[str, object], certname: str) -> x509.Certificate:
    """entry describes the certificate on disk exactly: its file, key, serial and expiry."""
    cert = x509.load_pem_x509_certificate(Path(str(entry["cert"])).read_bytes())
    assert Path(str(entry["cert"])).is_absolute()
    assert certname_of(cert) == certname
    assert entry["serial"] == f"{cert.serial_number:x}"
    assert dt.datetime.fromisoformat(str(entry["not_after"])) == cert.not_valid_after_utc
    assert str(entry["not_after"]).endswith("Z")
    if "key" in entry:
        key = Path(str(entry["key"]))
        assert key.is_absolute() and stat.S_IMODE(key.stat().st_mode) == 0o600
    return cert


def test_json_says_what_each_subcommand_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative DIR: the report's paths are absolute all the same
    made = pki_json("--json", "init", "ssl", "--conductor", "c.test", "--player", "p1.test",
                    "--audience", "ops.test")
    root = tmp_path / "ssl"
    assert made["command"] == "init" and made["dir"] == str(root)
    ca = made["ca"]
    assert isinstance(ca, dict) and ca["key"] == str(root / "private_keys" / "ca_key.pem")
    ca_cert = x509.load_pem_x509_certificate((root / "certs" / "ca.pem").read_bytes())
    assert ca["cert"] == str(root / "certs" / "ca.pem") and ca["serial"] == f"{ca_cert.serial_number:x}"
    assert made["crl"] == {"path": str(root / "crl.pem"), "revoked": [],
                           "next_update": x509.load_pem_x509_crl((root / "crl.pem").read_bytes())
                           .next_update_utc.isoformat().replace("+00:00", "Z")}  # type: ignore[union-attr]
    certificates = made["certificates"]
    assert isinstance(certificates, list)
    assert [(c["certname"], c["role"]) for c in certificates] == [
        ("c.test", "conductor"), ("p1.test", "player"), ("ops.test", "audience")]
    for entry in certificates:
        check_certificate(entry, entry["certname"])
        assert entry["cert"] == str(root / "certs" / f"{entry['certname']}.pem")
        assert entry["key"] == str(root / "private_keys" / f"{entry['certname']}.pem")

    # --json also after the subcommand; issue says whether it replaced a certificate.
    issued = pki_json("issue", "ssl", "ci.test", "--role", "audience", "--json")
    assert issued["command"] == "issue"
    [entry] = issued["certificates"]  # type: ignore[misc]
    assert (entry["certname"], entry["role"], entry["replaced"]) == ("ci.test", "audience", False)
    check_certificate(entry, "ci.test")
    old_serial = certificates[1]["serial"]
    replaced = pki_json("issue", "ssl", "p1.test", "--role", "player", "--force", "--json")
    [entry] = replaced["certificates"]  # type: ignore[misc]
    assert entry["replaced"] is True and entry["serial"] != old_serial
    check_certificate(entry, "p1.test")

    revoked = pki_json("revoke", "--json", "ssl", "p1.test")
    assert revoked["command"] == "revoke" and revoked["dir"] == str(root)
    entry = revoked["revoked"]
    assert isinstance(entry, dict) and entry["certname"] == "p1.test"
    assert check_certificate(entry, "p1.test").serial_number == int(str(entry["serial"]), 16)
    crl = revoked["crl"]
    assert isinstance(crl, dict) and crl["path"] == str(root / "crl.pem")
    on_disk = x509.load_pem_x509_crl((root / "crl.pem").read_bytes())
    assert crl["revoked"] == [f"{e.serial_number:x}" for e in on_disk] == [entry["serial"]]


def test_json_changes_nothing_about_a_refusal(tmp_path: Path) -> None:
    pki.init(tmp_path / "ssl", "c.test", [], [])
    result = subprocess.run([sys.executable, "-m", "devtools.pki", "--json", "issue", str(tmp_path / "ssl"),
                             "c.test", "--role", "conductor"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("orchestra-pki: ") and result.stderr.count("\n") == 1


def test_export_writes_a_password_protected_pkcs12_with_the_ca_chain(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    root = tmp_path / "ssl"
    pki.init(root, "c.test", [], ["ops.test"])
    password = tmp_path / "password"
    password.write_text("correct horse battery\n")
    out = tmp_path / "ops.p12"
    assert pki.main(["export", str(root), "ops.test", "--p12", str(out), "--password-file", str(password)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    loaded = pkcs12.load_pkcs12(out.read_bytes(), b"correct horse battery")
    assert loaded.cert is not None and certname_of(loaded.cert.certificate) == "ops.test"
    assert loaded.key is not None
    ca = x509.load_pem_x509_certificate((root / "certs" / "ca.pem").read_bytes())
    assert [extra.certificate for extra in loaded.additional_certs] == [ca]
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(out.read_bytes(), b"wrong")
    # Never over an existing file unless asked; never with a short password; and without
    # a terminal or a file, it says how to give one.
    assert pki.main(["export", str(root), "ops.test", "--p12", str(out), "--password-file", str(password)]) == 2
    password.write_text("short\n")
    assert pki.main(["export", str(root), "ops.test", "--p12", str(tmp_path / "b.p12"),
                     "--password-file", str(password)]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    bare = tmp_path / "bare.p12"
    result = subprocess.run([sys.executable, "-m", "devtools.pki", "export", str(root), "ops.test", "--p12",
                             str(bare)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "--password-file" in result.stderr and not bare.exists()
    assert pki.main(["export", str(root), "ops.test", "--p12", str(bare), "--no-password"]) == 0
    assert pkcs12.load_pkcs12(bare.read_bytes(), None).key is not None
    assert pki.main(["export", str(root), "nobody.test", "--p12", str(tmp_path / "n.p12"), "--no-password"]) == 2
