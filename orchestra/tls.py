"""TLS material, verified peer identities and revocation, shared by every side.

Identity is the verified certificate's certname (subject CN), read only from gRPC's auth
context. A certificate whose SANs name anything but its CN is refused: with extra SANs
gRPC would report several identities, and Puppet warns such certs can impersonate nodes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from orchestra.config import TLSFiles
from orchestra.errors import StartupError
from orchestra.params import CERTNAME_RE

# cryptography is imported by each function that parses a certificate or CRL, not here:
# the audience commands on the local socket use this module's channel settings only,
# and the certificate parser would be the heaviest thing they load.
if TYPE_CHECKING:
    from cryptography import x509

MAX_MESSAGE_BYTES = 8 * 1024 * 1024

# Keepalive values that work together (DESIGN-NOTES §1.6): both ends ping every 30 s even
# on idle streams, servers permit it, and a missing ping ack counts after 20 s. So a
# frozen or unreachable peer is dropped within 50 s. Pings every 10 s were half the idle
# cost of a conductor with thousands of sessions (3,000 idle: 5.0 % of a core, 2.7 % at
# 30 s). A shorter timeout collapses under load: in a reconnect storm of 10,000 players,
# peers busy with handshakes answered pings late, GOAWAY ping_timeout tore the sessions
# down, and they kept being redialled.
KEEPALIVE_TIMEOUT_MS = 20_000
CLIENT_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
]
SERVER_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
]
MESSAGE_LIMITS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise StartupError(f"cannot read {what} {path}: {err.strerror}") from None
    if b"-----BEGIN" not in data:
        raise StartupError(f"{what} {path} is not a PEM file")
    return data


@dataclass(frozen=True)
class Material:
    """The PEM bytes of one side's CA bundle, certificate and key, checked to load."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def load(cls, files: TLSFiles) -> Material:
        from cryptography import x509

        material = cls(read_pem(files.ca, "CA bundle"), read_pem(files.cert, "certificate"),
                       read_pem(files.key, "private key"))
        try:
            x509.load_pem_x509_certificates(material.ca)
            x509.load_pem_x509_certificate(material.cert)
        except ValueError as err:
            raise StartupError(f"cannot parse certificate: {err}") from None
        return material

    @property
    def certificate(self) -> x509.Certificate:
        from cryptography import x509

        return x509.load_pem_x509_certificate(self.cert)

    @property
    def certname(self) -> str:
        """Our own CN (a conductor's cert may carry extra SANs for the names it is dialled by)."""
        from cryptography import x509

        names = self.certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        value = names[0].value if len(names) == 1 else ""
        return value if isinstance(value, str) and CERTNAME_RE.fullmatch(value) else ""


def channel_credentials(material: Material) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=material.ca,
                                        private_key=material.key, certificate_chain=material.cert)


def channel_options(server_name: str) -> list[tuple[str, Any]]:
    """Options for a client channel that verifies the server's cert names server_name."""
    return [("grpc.ssl_target_name_override", server_name), *CLIENT_KEEPALIVE, *MESSAGE_LIMITS]


def certname_of(cert: x509.Certificate) -> str | None:
    """The certname (CN) if the cert is acceptable as an identity, else None."""
    from cryptography import x509

    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        return None
    cn = names[0].value
    if CERTNAME_RE.fullmatch(cn) is None:
        return None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return cn
    if any(not isinstance(entry, (x509.DNSName, x509.IPAddress)) for entry in san):
        return None
    dns = set(san.get_values_for_type(x509.DNSName))
    return cn if dns <= {cn} else None


@dataclass(frozen=True)
class PeerIdentity:
    certname: str
    serial: int
    not_after: float


def peer_identity(context: Any) -> PeerIdentity | None:
    """The verified identity of an mTLS peer, or None (which always means deny)."""
    from cryptography import x509

    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    pems = auth.get("x509_pem_cert")
    if not pems or len(pems) != 1:
        return None
    try:
        cert = x509.load_pem_x509_certificate(pems[0])
    except ValueError:
        return None
    name = certname_of(cert)
    common = auth.get("x509_common_name")
    if name is None or common != [name.encode()]:
        return None
    return PeerIdentity(name, cert.serial_number,
                        cert.not_valid_after_utc.timestamp())


def not_after(cert_pem: bytes) -> float:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()


class RevocationList:
    """Revoked serials from a CRL file, checked against the CA and its next_update."""

    def __init__(self, serials: frozenset[int], next_update: dt.datetime | None) -> None:
        self.serials = serials
        self.next_update = next_update

    @classmethod
    def load(cls, path: Path, ca_pem: bytes) -> RevocationList:
        """Parse and verify; raises StartupError (fail closed) when anything is off."""
        from cryptography import x509

        try:
            crl = x509.load_pem_x509_crl(path.read_bytes())
        except OSError as err:
            raise StartupError(f"cannot read CRL {path}: {err.strerror}") from None
        except ValueError as err:
            raise StartupError(f"cannot parse CRL {path}: {err}") from None
        issuers = [c for c in x509.load_pem_x509_certificates(ca_pem) if c.subject == crl.issuer]
        if not any(_crl_signed_by(crl, issuer) for issuer in issuers):
            raise StartupError(f"CRL {path} is not signed by the configured CA")
        next_update = crl.next_update_utc
        if next_update is not None and next_update < dt.datetime.now(dt.UTC):
            raise StartupError(f"CRL {path} expired at {next_update.isoformat()}")
        return cls(frozenset(entry.serial_number for entry in crl), next_update)

    def is_revoked(self, serial: int) -> bool:
        return serial in self.serials


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except TypeError:  # a key type CRLs cannot be signed with
        return False
