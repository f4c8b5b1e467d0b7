"""One CA for a fleet: export the gateway CA (private key and certificate, PEM) from one data
dir, import it into others, so every instance signs with the same CA and clients trust one
certificate (CODEX_CA_CERTIFICATE) whichever instance the balancer picks.

The files written are the ones mitmproxy itself makes on first start (certs.CertStore.create_store),
so its TlsConfig loads the imported CA as it would its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from mitmproxy.certs import DEFAULT_DHPARAM, load_pem_private_key

BASENAME = "mitmproxy"  # mitmproxy's file names in its confdir


class BundleError(ValueError):
    """The file is not a usable CA bundle; the message says why (never showing the key)."""


def confdir(data_dir: Path) -> Path:
    return data_dir / "mitmproxy"


def export_bundle(data_dir: Path) -> bytes:
    """The CA's private key and certificate, PEM (what `import_bundle` takes)."""
    path = confdir(data_dir) / f"{BASENAME}-ca.pem"
    if not path.exists():
        raise BundleError(f"no CA in {confdir(data_dir)} yet: run `codexgate up` or `codexgate ca` once")
    return path.read_bytes()


def read_bundle(raw: bytes, source: str) -> tuple[object, list[x509.Certificate]]:
    """(private key, certificates) of a PEM bundle, checked: a CA certificate and its own key."""
    try:
        key = load_pem_private_key(raw, None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{source}: no unencrypted PEM private key ({type(exc).__name__})") from None
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except ValueError:
        raise BundleError(f"{source}: no PEM certificate") from None
    ca = certs[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if ca.public_key().public_bytes(serialization.Encoding.PEM, public) != key.public_key().public_bytes(
        serialization.Encoding.PEM, public
    ):
        raise BundleError(f"{source}: the private key does not belong to the first certificate")
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise BundleError(f"{source}: the first certificate is not a CA (basicConstraints CA:TRUE)")
    return key, certs


def import_bundle(raw: bytes, data_dir: Path, source: str, replace: bool = False) -> bool:
    """Installs the CA bundle into the data dir. False when that very CA is already there.

    Raises BundleError for a bad bundle, or when another CA is installed and not `replace`:
    certificates it issued would stop being trusted by clients of the old one."""
    key, certs = read_bundle(raw, source)
    directory = confdir(data_dir)
    current = directory / f"{BASENAME}-ca.pem"
    if current.exists():
        if current.read_bytes() == raw:
            return False
        if not replace:
            raise BundleError(
                f"{directory} already has another CA; pass --replace to swap it (clients must then trust the new one)"
            )
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    cert_pem = certs[0].public_bytes(serialization.Encoding.PEM)
    none = serialization.NoEncryption()
    secret = {
        f"{BASENAME}-ca.pem": raw,
        f"{BASENAME}-ca.p12": pkcs12.serialize_key_and_certificates(BASENAME.encode(), key, certs[0], None, none),  # type: ignore[arg-type]
    }
    public = {
        f"{BASENAME}-ca-cert.pem": cert_pem,
        f"{BASENAME}-ca-cert.cer": cert_pem,
        f"{BASENAME}-ca-cert.p12": pkcs12.serialize_key_and_certificates(BASENAME.encode(), None, certs[0], None, none),
        f"{BASENAME}-dhparam.pem": DEFAULT_DHPARAM,
    }
    for name, content in {**public, **secret}.items():
        _write(directory / name, content, 0o600 if name in secret else 0o644)
    return True


def _write(path: Path, content: bytes, mode: int) -> None:
    """Atomically, so a gateway starting meanwhile never reads half a key."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.chmod(temporary, mode)
    os.replace(temporary, path)
