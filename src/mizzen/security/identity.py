"""SPIFFE identities as Istio writes them: ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_TRUST_DOMAIN", "SPIFFE_PREFIX", "Identity", "IdentityError"]

DEFAULT_TRUST_DOMAIN = "cluster.local"
SPIFFE_PREFIX = "spiffe://"

# DNS-1123 labels for namespace and service account; a trust domain is a DNS-like name
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_TRUST_DOMAIN = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9._]{0,253}[A-Za-z0-9])?$")


class IdentityError(ValueError):
    """A malformed SPIFFE ID, namespace, service account or trust domain (one clear line)."""


@dataclass(frozen=True, order=True)
class Identity:
    """One workload identity: who a certificate or a credential speaks for."""

    namespace: str
    service_account: str
    trust_domain: str = DEFAULT_TRUST_DOMAIN

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise IdentityError(f"invalid trust domain {self.trust_domain!r}")
        for what, value in (("namespace", self.namespace), ("service account", self.service_account)):
            if not _LABEL.match(value):
                raise IdentityError(f"invalid {what} {value!r}: must be a DNS-1123 name")

    @property
    def uri(self) -> str:
        return f"{SPIFFE_PREFIX}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> Identity:
        """``spiffe://td/ns/<ns>/sa/<sa>`` -> Identity; anything else raises :class:`IdentityError`."""
        if not uri.startswith(SPIFFE_PREFIX):
            raise IdentityError(f"not a SPIFFE ID (no spiffe:// prefix): {uri!r}")
        parts = uri[len(SPIFFE_PREFIX):].split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise IdentityError(f"not an Istio SPIFFE ID (spiffe://<trust domain>/ns/<ns>/sa/<sa>): {uri!r}")
        return cls(namespace=parts[2], service_account=parts[4], trust_domain=parts[0])
