"""TLS material, verified peer identities and revocation, shared by every side.

Identity is the verified certificate's certname (subject CN), read only from gRPC's auth
context. A certificate whose SANs name anything but its CN is refused: with extra SANs
gRPC would report several identities, and Puppet warns such certs can impersonate nodes.
"""

from __future__ import annotations

import datetime as dt
import re
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
    import ssl

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
        """Read and check the three files: each parses, and the key is the certificate's."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        material = cls(read_pem(files.ca, "CA bundle"), read_pem(files.cert, "certificate"),
                       read_pem(files.key, "private key"))
        try:
            x509.load_pem_x509_certificates(material.ca)
            cert = x509.load_pem_x509_certificate(material.cert)
        except ValueError as err:
            raise StartupError(f"cannot parse certificate: {err}") from None
        # Checked here: gRPC would only say it cannot listen (or connect), naming the port.
        try:
            key = serialization.load_pem_private_key(material.key, password=None)
        except (ValueError, TypeError) as err:
            raise StartupError(f"cannot parse private key {files.key}: {err}") from None
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
            raise StartupError(f"private key {files.key} does not belong to certificate {files.cert}")
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
    issuer: bytes = b""  # DER of the issuer's name: a serial is unique only per issuer

    @property
    def label(self) -> str:
        return f"{self.certname} (serial {self.serial:x})"


def leaf_identity(cert: x509.Certificate) -> PeerIdentity | None:
    """The identity a client certificate stands for, once TLS has verified it against the
    CA bundle; None when it is not acceptable as one (see :func:`certname_of`). The one
    rule for every listener: gRPC peers and the web view's clients alike."""
    name = certname_of(cert)
    if name is None:
        return None
    return PeerIdentity(name, cert.serial_number, cert.not_valid_after_utc.timestamp(),
                        cert.issuer.public_bytes())


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
    identity = leaf_identity(cert)
    # gRPC reports every name of the certificate: anything but exactly the certname is refused.
    if identity is None or auth.get("x509_common_name") != [identity.certname.encode()]:
        return None
    return identity


def der_identity(der: bytes | None) -> PeerIdentity | None:
    """The identity of a verified client certificate given as DER (what Python's ssl
    module hands a server), or None."""
    from cryptography import x509

    if not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    return leaf_identity(cert)


def server_context(files: TLSFiles, setting: str) -> ssl.SSLContext:
    """A server's TLS context for an HTTP listener (metrics, the web view): the daemon's
    own certificate and key, TLS 1.2 at least, and a client certificate that chains to
    the CA bundle required of every client. ``setting`` names the config key in errors."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(files.cert, files.key)
        context.load_verify_locations(cafile=files.ca)
    except (OSError, ssl.SSLError) as err:
        raise StartupError(f"{setting}: cannot use certificate {files.cert}, key {files.key} and CA bundle"
                           f" {files.ca}: {err.strerror or err}") from None
    return context


def not_after(cert_pem: bytes) -> float:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()


# A CRL issued a little in the future (clock skew between the CA and us) is still current.
CRL_CLOCK_SKEW = dt.timedelta(minutes=5)
_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


class RevocationList:
    """Every CRL of a CRL file, each verified against its CA in the bundle.

    A Puppet CA is a root and an intermediate: ``ca.pem`` holds both, and ``crl.pem`` one
    CRL from each, in either order. A certificate is revoked when its (issuer, serial)
    is listed, or when any CA between it and the root is revoked by its own issuer.
    Loading fails closed: every CA in the bundle needs a current CRL signed by it.
    """

    def __init__(self, revoked: frozenset[tuple[bytes, int]],
                 next_updates: tuple[tuple[str, dt.datetime | None], ...],
                 parents: dict[bytes, tuple[bytes, int]]) -> None:
        self.revoked = revoked            # (issuer DER, serial)
        self.next_updates = next_updates  # each CRL's issuer (RFC 4514) and nextUpdate
        self.parents = parents            # CA subject DER -> (its issuer DER, its serial)
        self.next_update = min((at for _, at in next_updates if at is not None), default=None)

    @classmethod
    def load(cls, path: Path, ca_pem: bytes, now: dt.datetime | None = None) -> RevocationList:
        """Parse and verify; raises StartupError (fail closed) when anything is off."""
        from cryptography import x509

        now = now or dt.datetime.now(dt.UTC)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise StartupError(f"cannot read CRL {path}: {err.strerror}") from None
        blocks = _CRL_BLOCK.findall(data)
        if not blocks:
            raise StartupError(f"cannot parse CRL {path}: no PEM CRL in it")
        cas = x509.load_pem_x509_certificates(ca_pem)
        parents = {ca.subject.public_bytes(): (ca.issuer.public_bytes(), ca.serial_number) for ca in cas}
        revoked: set[tuple[bytes, int]] = set()
        covered: set[bytes] = set()
        next_updates: list[tuple[str, dt.datetime | None]] = []
        for number, block in enumerate(blocks, 1):
            try:
                crl = x509.load_pem_x509_crl(block)
            except ValueError as err:
                raise StartupError(f"cannot parse CRL #{number} in {path}: {err}") from None
            issuer = crl.issuer.rfc4514_string()
            if not any(ca.subject == crl.issuer and _crl_signed_by(crl, ca) for ca in cas):
                raise StartupError(f"CRL #{number} in {path} (issuer {issuer}) is not signed by a CA"
                                   " in the CA bundle")
            if crl.last_update_utc > now + CRL_CLOCK_SKEW:
                raise StartupError(f"CRL #{number} in {path} (issuer {issuer}) is not valid before"
                                   f" {crl.last_update_utc.isoformat()}")
            if crl.next_update_utc is not None and crl.next_update_utc < now:
                raise StartupError(f"CRL #{number} in {path} (issuer {issuer}) expired at"
                                   f" {crl.next_update_utc.isoformat()}")
            next_updates.append((issuer, crl.next_update_utc))
            issuer_der = crl.issuer.public_bytes()
            covered.add(issuer_der)
            revoked.update((issuer_der, entry.serial_number) for entry in crl)
        missing = [ca.subject.rfc4514_string() for ca in cas if ca.subject.public_bytes() not in covered]
        if missing:
            raise StartupError(f"CRL {path} has no CRL for CA {missing[0]}: every CA in the bundle"
                               " needs its current CRL")
        return cls(frozenset(revoked), tuple(next_updates), parents)

    @property
    def count(self) -> int:
        return len(self.revoked)

    def why_revoked(self, issuer: bytes, serial: int) -> str | None:
        """Why a certificate (issuer DER, serial) is refused, or None when it is good."""
        if (issuer, serial) in self.revoked:
            return f"certificate serial {serial:x} is revoked"
        seen: set[bytes] = set()
        while issuer not in seen:  # up the chain to the root: is any CA on the way revoked?
            seen.add(issuer)
            parent = self.parents.get(issuer)
            if parent is None:
                return "certificate issuer is not a CA of the bundle"
            if parent in self.revoked:
                return f"the issuing CA (serial {parent[1]:x}) is revoked"
            if parent[0] == issuer:  # self-signed: the root
                return None
            issuer = parent[0]
        return "the certificate's chain of CAs loops"


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except TypeError:  # a key type CRLs cannot be signed with
        return False
