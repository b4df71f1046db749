"""Kubernetes ``Secret`` objects as TLS credentials, as Istio reads them
(pilot/pkg/credentials/kube/secrets.go).

A Secret's content is ``data`` (base64) merged with ``stringData`` (plain text; it wins, as the API server
merges it). A credential is ``cert``/``key`` (generic Secret, with an optional ``cacert``) or ``tls.crt``/
``tls.key`` (``kubernetes.io/tls``, optional ``ca.crt``); a CA for MUTUAL is ``cacert`` or ``ca.crt``, taken
from a Secret named ``<name>-cacert`` first, else from ``<name>`` itself (istiod's GetCaCert). Istio's SDS
resource names are ``kubernetes://<name>`` and ``kubernetes://<name>-cacert``.

Secret values are never part of an error message, and :func:`redacted` is what every listing shows instead
of the values (keys and sizes, like ``kubectl describe secret``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mizzen.config.model import Config

__all__ = [
    "CA_SUFFIX",
    "CERT_KEYS",
    "KUBERNETES_PREFIX",
    "ROOT_KEYS",
    "CertInfo",
    "CredentialError",
    "cert_info",
    "leaf_certificate",
    "redacted",
    "redacted_manifest",
    "root_cert",
    "sds_name",
    "secret_data",
]

KUBERNETES_PREFIX = "kubernetes://"
CA_SUFFIX = "-cacert"
# (certificate key, private key key, CA key) of the two layouts istiod accepts, generic first as in Istio
CERT_KEYS: tuple[tuple[str, str, str], ...] = (("cert", "key", "cacert"), ("tls.crt", "tls.key", "ca.crt"))
ROOT_KEYS: tuple[str, ...] = ("cacert", "ca.crt")
REDACTED_FMT = "[redacted: {} bytes]"


class CredentialError(ValueError):
    """A Secret that cannot serve as a credential; the message is one line and never holds secret data."""


@dataclass(frozen=True)
class CertInfo:
    """A credential's PEM parts (``ca`` empty when the Secret has none)."""

    cert: bytes
    key: bytes
    ca: bytes = b""


def secret_data(secret: Config) -> dict[str, bytes]:
    """``data`` (base64-decoded) merged with ``stringData``; a value that is no valid base64 raises."""
    out: dict[str, bytes] = {}
    data = secret.spec.get("data") or {}
    if isinstance(data, Mapping):
        for k, v in data.items():
            try:
                out[str(k)] = base64.b64decode(str(v if v is not None else ""), validate=True)
            except (binascii.Error, ValueError):
                raise CredentialError(f"data[{k}]: illegal base64 data") from None
    string_data = secret.spec.get("stringData") or {}
    if isinstance(string_data, Mapping):
        for k, v in string_data.items():
            out[str(k)] = str(v if v is not None else "").encode()
    return out


def _found(data: Mapping[str, bytes]) -> str:
    return ", ".join(sorted(data)) or "none"


def cert_info(data: Mapping[str, bytes]) -> CertInfo:
    """Istio's ExtractCertInfo: the first layout whose certificate and key are both non-empty."""
    for cert_key, key_key, ca_key in CERT_KEYS:
        if data.get(cert_key) and data.get(key_key):
            return CertInfo(data[cert_key], data[key_key], data.get(ca_key, b""))
    raise CredentialError("found secret, but didn't have expected keys (cert and key) or (tls.crt and "
                          f"tls.key); found: {_found(data)}")


def root_cert(data: Mapping[str, bytes]) -> bytes:
    """Istio's ExtractRoot: ``cacert``, else ``ca.crt``."""
    for k in ROOT_KEYS:
        if data.get(k):
            return data[k]
    raise CredentialError("found secret, but didn't have expected keys cacert or ca.crt; found: "
                          f"{_found(data)}")


def leaf_certificate(pem: bytes, what: str = "certificate") -> x509.Certificate:
    """The first certificate of a PEM chain (raises CredentialError when there is none)."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CredentialError(f"{what} is not a PEM encoded X.509 certificate") from None
    return certs[0]


def check_key_matches(cert: x509.Certificate, key_pem: bytes) -> None:
    """The private key parses as PEM and belongs to ``cert``'s public key."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CredentialError("private key is not an unencrypted PEM private key") from None
    except Exception:   # unsupported algorithm and the like
        raise CredentialError("private key cannot be loaded") from None
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, fmt) != cert.public_key().public_bytes(enc, fmt):
        raise CredentialError("private key does not match the certificate")


def expired(cert: x509.Certificate, now: datetime.datetime | None = None) -> bool:
    now = now or datetime.datetime.now(datetime.UTC)
    return cert.not_valid_after_utc <= now


def sds_name(credential_name: str, ca: bool = False) -> str:
    """Istio's SDS resource name for a gateway ``credentialName`` (the CA part: ``<name>-cacert``)."""
    return f"{KUBERNETES_PREFIX}{credential_name}{CA_SUFFIX if ca else ''}"


def _size(value: Any, base64_encoded: bool) -> int:
    text = str(value if value is not None else "")
    if base64_encoded:
        try:
            return len(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            return len(text)
    return len(text.encode())


def redacted(secret: Config) -> dict[str, int]:
    """Key -> size in bytes of every value (``data`` and ``stringData``), the only view of a Secret shown."""
    out: dict[str, int] = {}
    for field_name, encoded in (("data", True), ("stringData", False)):
        values = secret.spec.get(field_name) or {}
        if isinstance(values, Mapping):
            for k, v in values.items():
                out[str(k)] = _size(v, encoded)
    return dict(sorted(out.items()))


def redacted_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of a Secret's manifest with every value of ``data``/``stringData`` (at the top level, or under
    ``spec``) replaced by its size."""
    out = dict(manifest)
    if isinstance(out.get("spec"), dict):
        out["spec"] = dict(out["spec"])
    for holder in (out, out.get("spec")):
        if not isinstance(holder, dict):
            continue
        for field_name, encoded in (("data", True), ("stringData", False)):
            values = holder.get(field_name)
            if isinstance(values, Mapping):
                holder[field_name] = {str(k): REDACTED_FMT.format(_size(v, encoded))
                                      for k, v in values.items()}
    return out
