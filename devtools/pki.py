# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""A development/test PKI laid out like Puppet's ssl directory (CONTRACT.md §10).

``orchestra-pki init DIR --conductor NAME --player NAME... --audience NAME...`` writes
``certs/ca.pem``, ``certs/NAME.pem``, ``private_keys/NAME.pem`` (0600) and ``crl.pem``.
``issue`` adds a certificate from the same CA (never replacing one without ``--force``:
a key silently overwritten is a host locked out), ``revoke`` adds its serial to the CRL,
``export --p12 OUT`` writes a certificate, its key and the CA chain as one PKCS#12 file,
password-protected, to load into a browser for the conductor's web view.
Each prints DIR (``export``: OUT); with ``--json``, one object saying what it wrote
(paths, certnames, serials, expiry dates), for scripts that provision hosts.
Production fleets use Puppet's own CA instead (see certs/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orchestra.cli import (
    INTERRUPTED_MEANING, ExitMeanings, document_exits, offer_completions, run_cli, write_out,
)
from orchestra.errors import ExitCode, OrchestraError, UsageError
from orchestra.params import CERTNAME_RE

ROLE_USAGES = {
    "conductor": (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    # Puppet agent certificates carry both; players only need clientAuth.
    "player": (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    "audience": (ExtendedKeyUsageOID.CLIENT_AUTH,),
}


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def new_authority(common_name: str = "Orchestra development CA", days: int = 3650) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def issue(
    authority: Authority,
    name: str,
    usages: Sequence[x509.ObjectIdentifier],
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    extra_dns: Iterable[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Issue an EC P-256 leaf certificate with CN = SAN = name and the given EKUs."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                     content_commitment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(name), *(x509.DNSName(extra) for extra in extra_dns)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            authority.key.public_key()), critical=False)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return builder.sign(authority.key, hashes.SHA256()), key


def crl(authority: Authority, revoked: Iterable[int] = (), days: int = 365,
        next_update: dt.datetime | None = None) -> x509.CertificateRevocationList:
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(next_update or now + dt.timedelta(days=days))
    )
    for serial in sorted(set(revoked)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    return builder.sign(authority.key, hashes.SHA256())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class SSLDir:
    """A Puppet-style ssl directory: certs/, private_keys/, crl.pem and (dev only) ca_key.pem."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.certs = root / "certs"
        self.keys = root / "private_keys"
        self.ca_cert = self.certs / "ca.pem"
        self.ca_key = self.keys / "ca_key.pem"
        self.crl = root / "crl.pem"

    def cert(self, name: str) -> Path:
        return self.certs / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.keys / f"{name}.pem"

    def write_authority(self, authority: Authority) -> None:
        self.certs.mkdir(parents=True, exist_ok=True)
        self.keys.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys, 0o700)
        _write(self.ca_cert, cert_pem(authority.cert), 0o644)
        _write(self.ca_key, key_pem(authority.key), 0o600)
        _write(self.crl, crl(authority).public_bytes(serialization.Encoding.PEM), 0o644)

    def load_authority(self) -> Authority:
        try:
            cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        except (OSError, ValueError) as err:
            raise UsageError(f"{self.root}: no usable development CA ({err})") from None
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return Authority(cert, key)

    def write_leaf(self, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        _write(self.cert(name), cert_pem(cert), 0o644)
        _write(self.key(name), key_pem(key), 0o600)

    def revoke(self, authority: Authority, serials: Iterable[int]) -> None:
        current: set[int] = set()
        if self.crl.exists():
            current = {e.serial_number for e in x509.load_pem_x509_crl(self.crl.read_bytes())}
        _write(self.crl, crl(authority, current | set(serials)).public_bytes(
            serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with the final mode already set (keys are never world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _check_name(name: str) -> str:
    if CERTNAME_RE.fullmatch(name) is None or name in {"ca", "ca_key"}:
        raise UsageError(f"invalid certname {name!r}")
    return name


def init(root: Path, conductor: str, players: Sequence[str], audience: Sequence[str],
         ca_name: str = "Orchestra development CA") -> SSLDir:
    """A new CA (named ``ca_name``: a browser can be told to pick only its certificates)
    and one certificate and key per name, in a new ssl directory."""
    ssl = SSLDir(root)
    if ssl.ca_cert.exists():
        raise UsageError(f"{ssl.ca_cert} already exists; refusing to replace a CA")
    names = [_check_name(n) for n in [conductor, *players, *audience]]
    if len(set(names)) != len(names):
        raise UsageError("each certname may be given once")
    authority = new_authority(ca_name)
    ssl.write_authority(authority)
    for name, role in [(conductor, "conductor"), *((p, "player") for p in players),
                       *((a, "audience") for a in audience)]:
        ssl.write_leaf(name, *issue(authority, name, ROLE_USAGES[role]))
    return ssl


# A PKCS#12 file's protection: AES-256 with a key derived from the password (PBKDF2, many
# rounds), as current browsers and NSS read it. A password shorter than this is refused.
MIN_PASSWORD_CHARS = 8
P12_KDF_ROUNDS = 200_000


def p12_bytes(name: str, cert_path: Path, key_path: Path, ca_path: Path, password: bytes | None) -> bytes:
    """NAME's certificate and key with the CA chain (every certificate of the bundle), as
    PKCS#12; encrypted with ``password`` (None: not encrypted at all)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        chain = x509.load_pem_x509_certificates(ca_path.read_bytes())
    except OSError as err:
        raise UsageError(f"cannot read {err.filename}: {err.strerror}") from None
    except ValueError as err:
        raise UsageError(f"cannot use {name}'s certificate, key or CA bundle: {err}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise UsageError(f"{key_path}: only EC and RSA keys can be exported")
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if password is not None:
        encryption = (serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(P12_KDF_ROUNDS)
                      .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(hashes.SHA256())
                      .build(password))
    return pkcs12.serialize_key_and_certificates(name.encode(), key, cert, chain, encryption)


def export_password(password_file: Path | None, none: bool) -> bytes | None:
    """The PKCS#12 password: the first line of ``password_file``, or asked twice on the
    terminal; None only with ``--no-password``. A short or missing one is refused: the
    file holds a private key, and it is meant to be carried to another machine."""
    if none:
        if password_file is not None:
            raise UsageError("--no-password and --password-file cannot be used together")
        return None
    if password_file is not None:
        try:
            lines = password_file.read_text().splitlines()
        except OSError as err:
            raise UsageError(f"cannot read password file {password_file}: {err.strerror}") from None
        password = lines[0] if lines else ""
    elif sys.stdin.isatty():
        password = getpass.getpass("Password for the PKCS#12 file: ")
        if getpass.getpass("The same password again: ") != password:
            raise UsageError("the two passwords differ")
    else:
        raise UsageError("no terminal to ask for a password on: give --password-file FILE (or --no-password)")
    if len(password) < MIN_PASSWORD_CHARS:
        raise UsageError(f"the password must be at least {MIN_PASSWORD_CHARS} characters"
                         " (--no-password writes an unprotected file)")
    return password.encode()


# What orchestra-pki's exit codes mean; its --help (and each subcommand's) and its man
# page list them.
PKI_EXITS: ExitMeanings = (
    (ExitCode.OK, "done: prints DIR (with --json, one JSON object saying what was written)"),
    (ExitCode.FAILED, "anything else (a directory it may not write, a full disk)"),
    (ExitCode.USAGE, "refused: a bad option or certname, a CA or certificate already there "
                     "(without --force), no CA in DIR, no certificate to revoke or export, an "
                     "export file already there (without --force), a password too short"),
    INTERRUPTED_MEANING,
)
JSON_HELP = ("print one JSON object instead of DIR: the paths, certnames, serials (hex) and "
             "expiry dates of what was written")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestra-pki",
        description="Make a development or test PKI laid out like Puppet's ssl directory: a CA, "
                    "certificates and keys for the conductor, players and audience, and a CRL.")
    # --json is taken before or after the subcommand; the subcommand's own leaves the
    # top-level answer alone unless given (argparse would otherwise reset it to False).
    parser.add_argument("--json", action="store_true", help=JSON_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="init, issue, revoke or export (COMMAND --help for its options)")
    p_init = sub.add_parser("init", help="create a CA, certificates and an empty CRL",
                            description="Create DIR's CA, its empty CRL and one certificate and "
                                        "key per name given; refuses a DIR that has a CA already.")
    p_init.add_argument("dir", type=Path, metavar="DIR",
                        help="the ssl directory to create (Puppet's layout)")
    p_init.add_argument("--conductor", required=True, metavar="NAME",
                        help="the conductor's certname (the host name players dial)")
    p_init.add_argument("--player", nargs="+", default=[], metavar="NAME",
                        help="certnames of players (serverAuth and clientAuth, as Puppet agents)")
    p_init.add_argument("--audience", nargs="+", default=[], metavar="NAME",
                        help="certnames for remote audience use (clientAuth only)")
    p_issue = sub.add_parser("issue", help="issue one more certificate from DIR's CA",
                             description="Issue a certificate and key for NAME from DIR's CA; "
                                         "refuses to replace an existing one unless --force.")
    p_issue.add_argument("dir", type=Path, metavar="DIR", help="an ssl directory made by init")
    p_issue.add_argument("name", metavar="NAME", help="the certname (CN and DNS name)")
    p_issue.add_argument("--role", choices=sorted(ROLE_USAGES), required=True,
                         help="what the certificate is for: its extended key usages")
    p_issue.add_argument("--force", action="store_true",
                         help="replace NAME's certificate and key if they exist (the old "
                              "certificate stays valid until revoked)")
    p_revoke = sub.add_parser("revoke", help="add a certificate's serial to DIR/crl.pem",
                              description="Add NAME's certificate serial to DIR/crl.pem; send "
                                          "the conductor SIGHUP or let it notice the new file.")
    p_revoke.add_argument("dir", type=Path, metavar="DIR", help="an ssl directory made by init")
    p_revoke.add_argument("name", metavar="NAME", help="the certname whose certificate to revoke")
    p_export = sub.add_parser(
        "export", help="write a certificate, its key and the CA chain as one PKCS#12 file",
        description="Write NAME's certificate and key, with DIR's CA certificates, as a PKCS#12 "
                    "file (mode 0600) to load into a browser for the conductor's web view, encrypted "
                    f"(AES-256) with a password of at least {MIN_PASSWORD_CHARS} characters: read from "
                    "--password-file, or asked twice on the terminal.")
    p_export.add_argument("dir", type=Path, metavar="DIR", help="an ssl directory (Puppet's layout)")
    p_export.add_argument("name", metavar="NAME", help="the certname to export")
    p_export.add_argument("--p12", type=Path, required=True, metavar="OUT", help="the PKCS#12 file to write")
    p_export.add_argument("--password-file", type=Path, metavar="FILE",
                          help="read the password from the first line of FILE instead of asking")
    p_export.add_argument("--no-password", action="store_true",
                          help="write the private key unencrypted (only for a file that never leaves "
                               "a trusted machine)")
    p_export.add_argument("--force", action="store_true", help="replace OUT if it exists")
    for command in (p_init, p_issue, p_revoke, p_export):
        command.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
        document_exits(command, PKI_EXITS)
    document_exits(parser, PKI_EXITS)
    return parser


# ---- --json: what a subcommand wrote ------------------------------------------------------

def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _certificate(path: Path, key: Path | None = None, **names: object) -> dict[str, object]:
    """A certificate as written: its files, serial (hex, as the conductor logs it) and expiry."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    files = {"cert": str(path.absolute())} | ({"key": str(key.absolute())} if key else {})
    return {**names, **files, "serial": f"{cert.serial_number:x}",
            "not_after": _when(cert.not_valid_after_utc)}


def _leaf(ssl: SSLDir, name: str, role: str) -> dict[str, object]:
    return _certificate(ssl.cert(name), ssl.key(name), certname=name, role=role)


def _crl(ssl: SSLDir) -> dict[str, object]:
    revocations = x509.load_pem_x509_crl(ssl.crl.read_bytes())
    next_update = revocations.next_update_utc
    return {"path": str(ssl.crl.absolute()),
            "revoked": [f"{entry.serial_number:x}" for entry in revocations],
            "next_update": _when(next_update) if next_update else None}


@dataclass(frozen=True)
class Done:
    """What one subcommand did: DIR is printed, or with --json the report."""

    ssl: SSLDir
    report: dict[str, object]


def _command(args: argparse.Namespace) -> Done:
    """Carry out one parsed subcommand; returns the ssl directory it worked on and what it wrote."""
    if args.command == "init":
        ssl = init(args.dir, args.conductor, args.player, args.audience)
        leaves = [(args.conductor, "conductor"), *((p, "player") for p in args.player),
                  *((a, "audience") for a in args.audience)]
        return Done(ssl, {
            "ca": _certificate(ssl.ca_cert, ssl.ca_key),
            "crl": _crl(ssl),
            "certificates": [_leaf(ssl, name, role) for name, role in leaves]})
    ssl = SSLDir(args.dir)
    if args.command == "export":
        return _export(ssl, args)
    if args.command == "issue":
        name = _check_name(args.name)
        authority = ssl.load_authority()
        existing = [path for path in (ssl.cert(name), ssl.key(name)) if path.exists()]
        if existing and not args.force:
            raise UsageError(f"{existing[0]} already exists; refusing to replace {name}'s "
                             "certificate and key (--force replaces them)")
        ssl.write_leaf(name, *issue(authority, name, ROLE_USAGES[args.role]))
        return Done(ssl, {"certificates": [{**_leaf(ssl, name, args.role), "replaced": bool(existing)}]})
    authority = ssl.load_authority()
    name = _check_name(args.name)
    try:
        serial = x509.load_pem_x509_certificate(ssl.cert(name).read_bytes()).serial_number
    except OSError as err:
        raise UsageError(f"cannot read certificate of {args.name}: {err.strerror}") from None
    ssl.revoke(authority, [serial])
    return Done(ssl, {"revoked": _certificate(ssl.cert(name), certname=name), "crl": _crl(ssl)})


def _export(ssl: SSLDir, args: argparse.Namespace) -> Done:
    name = _check_name(args.name)
    out: Path = args.p12
    if out.exists() and not args.force:
        raise UsageError(f"{out} already exists; refusing to replace it (--force replaces it)")
    password = export_password(args.password_file, args.no_password)
    _write(out, p12_bytes(name, ssl.cert(name), ssl.key(name), ssl.ca_cert, password), 0o600)
    return Done(ssl, {"exported": {**_certificate(ssl.cert(name), certname=name), "p12": str(out.absolute()),
                                   "encrypted": password is not None}})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def body() -> int:
        offer_completions(parser)
        # Parsed inside run_cli, so --help into a closed pipe ends quietly too.
        args = parser.parse_args(argv)
        try:
            done = _command(args)
        except OSError as err:  # a directory we may not write, a full disk
            raise OrchestraError(f"{err.filename or args.dir}: {err.strerror or err}") from None
        if args.json:
            import json  # only --json needs it

            write_out(json.dumps({"command": args.command, "dir": str(done.ssl.root.absolute()),
                                  **done.report}, indent=2) + "\n")
        else:
            write_out(f"{args.p12 if args.command == 'export' else done.ssl.root}\n")
        return 0
    return run_cli("orchestra-pki", body)


if __name__ == "__main__":
    raise SystemExit(main())
