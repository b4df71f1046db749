"""Keys, CSRs and certificate facts, with ``cryptography`` (no hand-written X.509 or ASN.1).

Workload keys are RSA 2048 by default, as Istio's; ``KeyAlgorithm.ECDSA`` (P-256) is Istio's
``ECC_SIGNATURE_ALGORITHM=ECDSA``. Every parse error becomes a one-line :class:`PKIError`.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from mizzen.security.identity import Identity

__all__ = [
    "CertInfo",
    "KeyAlgorithm",
    "PKIError",
    "PrivateKey",
    "cert_info",
    "cert_pem",
    "csr_uris",
    "generate_key",
    "load_certs",
    "load_csr",
    "load_private_key",
    "make_csr",
    "private_key_pem",
    "public_keys_match",
    "uri_sans",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class PKIError(ValueError):
    """Unparseable or unusable key, CSR or certificate material (one line, never the key itself)."""


class KeyAlgorithm(str, enum.Enum):
    RSA = "RSA"
    ECDSA = "ECDSA"


def generate_key(algorithm: KeyAlgorithm = KeyAlgorithm.RSA, rsa_bits: int = 2048) -> PrivateKey:
    if algorithm is KeyAlgorithm.ECDSA:
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (it goes to 0600 files or straight to Envoy over the SDS socket)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(pem: bytes, what: str = "private key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise PKIError(f"{what}: not an unencrypted PEM private key ({type(e).__name__})") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PKIError(f"{what}: unsupported key type {type(key).__name__} (RSA or ECDSA only)")
    return key


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_certs(pem: bytes | str, what: str = "certificate") -> list[x509.Certificate]:
    """Every certificate in a PEM text (in order); none or garbage raises :class:`PKIError`."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise PKIError(f"{what}: no valid PEM certificate ({e})") from None
    return certs


def make_csr(key: PrivateKey, identity: Identity) -> bytes:
    """A PEM CSR asking for ``identity`` (its SPIFFE URI as the only SAN, the trust domain as O, as Istio)."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, identity.trust_domain)]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
                       critical=False)
    )
    signer: CertificateIssuerPrivateKeyTypes = key
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes | str) -> x509.CertificateSigningRequest:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as e:
        raise PKIError(f"CSR: not a valid PEM certificate request ({e})") from None
    if not csr.is_signature_valid:
        raise PKIError("CSR: its signature does not match its public key")
    return csr


def uri_sans(ext_owner: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    try:
        san = ext_owner.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def csr_uris(csr: x509.CertificateSigningRequest) -> list[str]:
    return uri_sans(csr)


def public_keys_match(key: PrivateKey, cert: x509.Certificate) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt))


@dataclass(frozen=True)
class CertInfo:
    """What ``proxy-config secret`` shows about one certificate."""

    serial: str                  # lowercase hex, as istioctl prints it
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    uris: tuple[str, ...]
    is_ca: bool

    def valid_at(self, now: dt.datetime) -> bool:
        return self.not_before <= now <= self.not_after

    def as_dict(self) -> dict[str, object]:
        return {
            "serialNumber": self.serial, "subject": self.subject, "issuer": self.issuer,
            "notBefore": self.not_before.isoformat(), "notAfter": self.not_after.isoformat(),
            "uris": list(self.uris), "isCA": self.is_ca,
        }


def cert_info(cert: x509.Certificate) -> CertInfo:
    try:
        is_ca = bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(
        serial=format(cert.serial_number, "x"), subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(), not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc, uris=tuple(uri_sans(cert)), is_ca=is_ca,
    )
