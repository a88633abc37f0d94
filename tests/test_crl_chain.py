"""Revocation with a Puppet-style two-level CA: a root and an intermediate, two CRLs.

Puppet's CA signs agents with an intermediate: ``ca.pem`` holds the intermediate and the
root, ``crl.pem`` one CRL from each. Every CRL must be read, whatever the order, and a
serial only means something together with its issuer.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtools import pki
from devtools.devcluster import CONDUCTOR_NAME
from orchestra.errors import StartupError
from orchestra.tls import RevocationList
from tests.conftest import MakeCluster, submit


def _ca(name: str, parent: pki.Authority | None) -> pki.Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(parent.cert.subject if parent else subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None if parent is None else 0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(parent.key if parent else key, hashes.SHA256())
    )
    return pki.Authority(cert, key)


class Chain:
    """Root -> intermediate -> leaves, written over a cluster's ssl dir like Puppet's."""

    def __init__(self, ssl: pki.SSLDir, names: list[str]) -> None:
        self.ssl = ssl
        # The same CN as an unrelated CA, so a serial-only match would be a real risk.
        self.root = _ca("Puppet Root CA: test", None)
        self.intermediate = _ca("Puppet CA: test", self.root)
        self.serials: dict[str, int] = {}
        for name in names:
            usages = pki.ROLE_USAGES["conductor" if name == CONDUCTOR_NAME else "player"]
            cert, key = pki.issue(self.intermediate, name, usages)
            ssl.write_leaf(name, cert, key)
            self.serials[name] = cert.serial_number
        ssl.ca_cert.write_bytes(pki.cert_pem(self.intermediate.cert) + pki.cert_pem(self.root.cert))

    def write_crls(self, *, leaves: list[str] = (), intermediate_revoked: bool = False,  # type: ignore[assignment]
                   root_first: bool = False, only: str | None = None) -> None:
        inter = pki.crl(self.intermediate, [self.serials[n] for n in leaves])
        root = pki.crl(self.root, [self.intermediate.cert.serial_number] if intermediate_revoked else [])
        crls = {"intermediate": inter, "root": root}
        order = ["root", "intermediate"] if root_first else ["intermediate", "root"]
        self.ssl.crl.write_bytes(b"".join(crls[name].public_bytes(serialization.Encoding.PEM)
                                          for name in order if only in (None, name)))


def _chain(tmp_path: Path, names: list[str]) -> Chain:
    ssl = pki.SSLDir(tmp_path / "ssl")
    ssl.certs.mkdir(parents=True)
    ssl.keys.mkdir(parents=True)
    return Chain(ssl, names)


def _identity(chain: Chain, name: str) -> tuple[bytes, int]:
    cert = x509.load_pem_x509_certificate(chain.ssl.cert(name).read_bytes())
    return cert.issuer.public_bytes(), cert.serial_number


@pytest.mark.parametrize("root_first", [False, True], ids=["intermediate-first", "root-first"])
def test_every_crl_in_the_file_is_read_whatever_the_order(tmp_path: Path, root_first: bool) -> None:
    chain = _chain(tmp_path, ["p1.test", "p2.test"])
    chain.write_crls(leaves=["p2.test"], root_first=root_first)
    crl = RevocationList.load(chain.ssl.crl, chain.ssl.ca_cert.read_bytes())
    assert crl.why_revoked(*_identity(chain, "p1.test")) is None
    assert "is revoked" in (crl.why_revoked(*_identity(chain, "p2.test")) or "")


def test_a_serial_is_revoked_only_together_with_its_issuer(tmp_path: Path) -> None:
    chain = _chain(tmp_path, ["p1.test"])
    issuer, serial = _identity(chain, "p1.test")
    chain.write_crls(leaves=["p1.test"])
    crl = RevocationList.load(chain.ssl.crl, chain.ssl.ca_cert.read_bytes())
    assert crl.why_revoked(issuer, serial) is not None
    # The same serial from the root (another issuer) is not the revoked certificate.
    assert crl.why_revoked(chain.root.cert.subject.public_bytes(), serial) is None


def test_a_revoked_intermediate_revokes_everything_it_issued(tmp_path: Path) -> None:
    chain = _chain(tmp_path, ["p1.test"])
    chain.write_crls(intermediate_revoked=True, root_first=True)
    crl = RevocationList.load(chain.ssl.crl, chain.ssl.ca_cert.read_bytes())
    assert "issuing CA" in (crl.why_revoked(*_identity(chain, "p1.test")) or "")


@pytest.mark.parametrize("only", ["root", "intermediate"])
def test_a_ca_without_its_crl_fails_closed(tmp_path: Path, only: str) -> None:
    chain = _chain(tmp_path, ["p1.test"])
    chain.write_crls(only=only)
    with pytest.raises(StartupError, match="has no CRL for CA"):
        RevocationList.load(chain.ssl.crl, chain.ssl.ca_cert.read_bytes())


def test_a_crl_not_yet_valid_or_expired_fails_closed(tmp_path: Path) -> None:
    chain = _chain(tmp_path, ["p1.test"])
    chain.write_crls()
    ca = chain.ssl.ca_cert.read_bytes()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    with pytest.raises(StartupError, match="expired"):
        RevocationList.load(chain.ssl.crl, ca, now=later)
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with pytest.raises(StartupError, match="not valid before"):
        RevocationList.load(chain.ssl.crl, ca, now=earlier)


def test_a_crl_from_another_ca_fails_closed(tmp_path: Path) -> None:
    chain = _chain(tmp_path, ["p1.test"])
    stranger = _ca("Puppet CA: test", None)  # same name, other key
    chain.ssl.crl.write_bytes(b"".join(pki.crl(ca).public_bytes(serialization.Encoding.PEM)
                                       for ca in (stranger, chain.root)))
    with pytest.raises(StartupError, match="not signed by a CA"):
        RevocationList.load(chain.ssl.crl, chain.ssl.ca_cert.read_bytes())


@pytest.mark.parametrize("root_first", [False, True], ids=["intermediate-first", "root-first"])
def test_revoked_player_under_an_intermediate_is_refused(make_cluster: MakeCluster, root_first: bool) -> None:
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    chain = Chain(cluster.ssl, [CONDUCTOR_NAME, "p1.test", "p2.test"])
    chain.write_crls(leaves=["p2.test"], root_first=root_first)
    cluster.start(["p1.test"])
    assert submit(cluster, "hello", "p1.test", "--wait")[0] == 0
    cluster.start_player("p2.test")
    cluster.wait_for(lambda: "is revoked" in cluster.log_text("conductor"), "p2 refused")
    assert "p2.test" not in cluster.connected()


def test_revoking_the_intermediate_closes_every_session_under_it(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"], start=False)
    chain = Chain(cluster.ssl, [CONDUCTOR_NAME, "p1.test"])
    chain.write_crls()
    cluster.start()
    chain.write_crls(intermediate_revoked=True)  # the conductor watches the file
    cluster.wait_disconnected(["p1.test"], timeout=15)
    assert "issuing CA" in cluster.log_text("conductor")
