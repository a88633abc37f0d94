"""orchestra-pki writes a Puppet-style ssl directory with private keys kept private."""

from __future__ import annotations

import stat
from pathlib import Path

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
