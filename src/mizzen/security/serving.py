"""The control plane's own TLS identity for its secure gRPC port (istiod's 15012): a serving certificate
signed by the mesh CA with istiod's DNS names, renewed at half its life, and the gRPC server credentials that
always hand out the current one.

Agents verify it against the mesh roots (handed to them with their pod credential, then from every
certificate response) and the name ``istiod.istio-system.svc``, as Istio's agents do. The key is an ECDSA
P-256 key made here and never written anywhere. gRPC asks :meth:`ServingCertificate.fetch` before each new
handshake; a renewal (half-life passed, or the CA's trust bundle changed by a root rotation) takes effect for
new connections while open ones keep theirs.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from mizzen.security.ca import CertificateAuthority
from mizzen.security.pki import CertInfo, KeyAlgorithm, cert_info, generate_key, load_certs, private_key_pem

log = logging.getLogger(__name__)

__all__ = ["ISTIOD_SAN", "ISTIOD_SANS", "ServingCertificate", "ServingPair"]

ISTIOD_SAN = "istiod.istio-system.svc"          # what Istio's agents verify (CA_ADDR's host name)
ISTIOD_SANS = (ISTIOD_SAN, "istiod.istio-system.svc.cluster.local", "istiod.istio-system")


@dataclass(frozen=True)
class ServingPair:
    key_pem: bytes
    chain_pem: str            # leaf + intermediates
    roots_pem: str            # the CA's trust bundle when issued
    leaf: CertInfo


class ServingCertificate:
    def __init__(self, ca: CertificateAuthority, dns_names: Sequence[str] = ISTIOD_SANS,
                 ttl: dt.timedelta = dt.timedelta(hours=24)) -> None:
        self.ca = ca
        self.dns_names = tuple(dns_names)
        self.ttl = ttl
        self.renewals = 0
        self._lock = threading.Lock()
        self._pair = self._issue()

    def _issue(self) -> ServingPair:
        key = generate_key(KeyAlgorithm.ECDSA)
        chain = self.ca.sign_server_certificate(key.public_key(), self.dns_names, self.ttl)
        leaf = cert_info(load_certs(chain[0])[0])
        log.info("serving certificate for %s: serial %s until %s", ",".join(self.dns_names), leaf.serial,
                 leaf.not_after.isoformat())
        return ServingPair(private_key_pem(key), "".join(chain[:-1]), chain[-1], leaf)

    @property
    def current(self) -> ServingPair:
        return self._pair

    def _due(self, now: dt.datetime) -> bool:
        pair = self._pair
        half = pair.leaf.not_before + (pair.leaf.not_after - pair.leaf.not_before) / 2
        return now >= half or pair.roots_pem != self.ca.trust_bundle.pem

    def renew_if_due(self, now: dt.datetime | None = None) -> bool:
        with self._lock:
            if not self._due(now or dt.datetime.now(dt.UTC)):
                return False
            self._pair = self._issue()
            self.renewals += 1
            return True

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        pair = self._pair
        return grpc.ssl_server_certificate_configuration(
            [(pair.key_pem, pair.chain_pem.encode())], root_certificates=pair.roots_pem.encode())

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's certificate fetcher: a new configuration when renewed, else None (keep the current)."""
        try:
            return self._configuration() if self.renew_if_due() else None
        except Exception as e:       # never break the handshake path: keep serving the current certificate
            log.warning("serving certificate renewal failed (%s); keeping serial %s", e,
                        self._pair.leaf.serial)
            return None

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS server credentials: the current certificate, renewed through :meth:`fetch`. Clients
        authenticate in the request (a pod credential), as Istio's agents do with their token."""
        return grpc.dynamic_ssl_server_credentials(self._configuration(), self.fetch,
                                                   require_client_authentication=False)
