"""The trust bundle: the root certificates a workload trusts (Envoy's ``ROOTCA``), one or several.

Several roots are how a root is rotated without dropping a request: the new root joins the bundle, every
workload receives the bundle, certificates move to the new root as they renew, then the old root leaves.
Istio's ``root-cert-combined.pem`` is such a bundle. A bundle is immutable; changes return a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from mizzen.security.pki import PKIError, cert_info, cert_pem, load_certs

__all__ = ["TrustBundle"]


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


@dataclass(frozen=True)
class TrustBundle:
    """Roots in order (the newest first when built by rotation), without duplicates."""

    roots: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.roots:
            raise PKIError("trust bundle: no root certificate")
        seen: set[bytes] = set()
        unique = []
        for cert in self.roots:
            fp = _fingerprint(cert)
            if fp not in seen:
                seen.add(fp)
                unique.append(cert)
        object.__setattr__(self, "roots", tuple(unique))

    @classmethod
    def from_pem(cls, pem: bytes | str, what: str = "root certificate") -> TrustBundle:
        certs = load_certs(pem, what)
        for cert in certs:
            if not cert_info(cert).is_ca:
                raise PKIError(f"{what}: certificate {cert.subject.rfc4514_string()!r} is not a CA")
        return cls(tuple(certs))

    def __iter__(self) -> Iterator[x509.Certificate]:
        return iter(self.roots)

    def __len__(self) -> int:
        return len(self.roots)

    @property
    def pem(self) -> str:
        return "".join(cert_pem(c) for c in self.roots)

    def with_roots(self, certs: Iterable[x509.Certificate], first: bool = True) -> TrustBundle:
        new = tuple(certs)
        return TrustBundle(new + self.roots if first else self.roots + new)

    def without(self, serial_hex: str) -> TrustBundle:
        """The bundle without the root whose serial (hex) is given; the last root cannot be removed."""
        kept = tuple(c for c in self.roots if format(c.serial_number, "x") != serial_hex.lower())
        if len(kept) == len(self.roots):
            raise PKIError(f"trust bundle: no root with serial {serial_hex}")
        return TrustBundle(kept)

    def contains(self, cert: x509.Certificate) -> bool:
        fp = _fingerprint(cert)
        return any(_fingerprint(c) == fp for c in self.roots)

    def issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        """The root in the bundle that signed ``cert`` directly, if any."""
        for root in self.roots:
            if root.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return root
        return None
