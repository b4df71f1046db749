"""The control plane's Citadel half: the mesh CA, the runner's pod credentials, the CA's gRPC service and
the TLS identity of the secure xDS port (istiod's 15012), and the node authorization of its streams.

* The CA: ``options.ca_dir`` (Istio's plugged-in ``cacerts``), else a self-signed root in
  ``<state dir>/ca`` (generated on first start), else (an in-memory control plane) one in a private temp
  dir removed at stop. Workload certificates last ``DEFAULT_WORKLOAD_CERT_TTL`` (istiod's env name; 24 h),
  at most ``MAX_WORKLOAD_CERT_TTL`` (90 days).
* Pod credentials (:class:`~mizzen.security.authn.LocalCredentials`): issued to the runner over the
  authenticated API (``POST /apis/credentials``), persisted as digests in ``<state dir>/credentials.json``
  so a restarted control plane or the demo's warm spare accepts them. On Kubernetes the control plane
  adds :class:`mizzen.kube.tokenreview.KubeJWTAuthenticator` (:meth:`MeshIdentity.add_authenticator`):
  pods' projected ``istio-ca`` tokens, checked by TokenReview.
* ``IstioCertificateService/CreateCertificate`` is served on the xDS gRPC server, TLS only.
* :meth:`MeshIdentity.authorize` is the xDS server's ``authorize`` callback (:mod:`mizzen.security.xdsauth`).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from mizzen.config.durations import parse_duration
from mizzen.security.authn import Authenticator, LocalCredentialAuthenticator, LocalCredentials
from mizzen.security.ca import CAError, CAOptions, CertificateAuthority
from mizzen.security.caserver import CAService
from mizzen.security.identity import Identity
from mizzen.security.serving import ISTIOD_SAN, ServingCertificate
from mizzen.security.xdsauth import NodeDenied, node_principal
from mizzen.tempdirs import owned_tempdir
from mizzen.xds.server import StreamDenied

__all__ = ["CREDENTIALS_FILE", "IssuedCredential", "MeshIdentity", "env_ttl"]

CREDENTIALS_FILE = "credentials.json"


def env_ttl(name: str, default: dt.timedelta) -> dt.timedelta:
    """A Go duration from the environment (``30s``, ``24h``); one-line CAError when it is not one."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    seconds = parse_duration(raw)
    if seconds is None or seconds <= 0:
        raise CAError(f"${name}={raw!r} is not a positive duration (like 30s or 24h)")
    return dt.timedelta(seconds=seconds)


@dataclass(frozen=True)
class IssuedCredential:
    """What the runner hands to a pod's agent: the credential and the mesh roots to verify istiod with."""

    credential: str
    root_cert: str
    trust_domain: str
    server_name: str = ISTIOD_SAN

    def as_dict(self) -> dict[str, str]:
        return {"credential": self.credential, "rootCert": self.root_cert, "trustDomain": self.trust_domain,
                "serverName": self.server_name}


class MeshIdentity:
    def __init__(self, state_dir: Path | None, ca_dir: Path | None = None,
                 trust_domain: str = "cluster.local",
                 authenticators: Sequence[Authenticator] = ()) -> None:
        """``authenticators`` are tried after the pod credentials (a Kubernetes TokenReview
        authenticator, as istiod's KubeJWTAuthenticator, goes here)."""
        options = CAOptions(trust_domain=trust_domain,
                            default_ttl=env_ttl("DEFAULT_WORKLOAD_CERT_TTL", dt.timedelta(hours=24)),
                            max_ttl=env_ttl("MAX_WORKLOAD_CERT_TTL", dt.timedelta(days=90)))
        self._tmp: Path | None = None
        if ca_dir is not None:
            self.ca = CertificateAuthority.from_cacerts(ca_dir, options)
        else:
            base = state_dir
            if base is None:
                base = self._tmp = owned_tempdir("mizzen-ca-")
            self.ca = CertificateAuthority.self_signed(base, options)
        self.credentials = LocalCredentials(state_dir / CREDENTIALS_FILE if state_dir is not None else None)
        self.authenticators: list[Authenticator] = [
            LocalCredentialAuthenticator(self.credentials, trust_domain), *authenticators]
        self.ca_service = CAService(self.ca, self.authenticators, require_tls=True)
        self.serving = ServingCertificate(self.ca)

    @property
    def trust_domain(self) -> str:
        return self.ca.trust_domain

    def server_credentials(self) -> grpc.ServerCredentials:
        return self.serving.server_credentials()

    def issue(self, namespace: str, pod: str, service_account: str) -> IssuedCredential:
        """A new credential for the pod, bound to its service account (replacing an earlier one)."""
        Identity(namespace, service_account, self.trust_domain)      # one-line IdentityError if malformed
        credential = self.credentials.issue(namespace, pod, service_account)
        return IssuedCredential(credential, self.ca.trust_bundle.pem, self.trust_domain)

    def add_authenticator(self, authenticator: Authenticator) -> None:
        """One more way in for the CA and the TLS xDS port, tried after the ones before (the Kubernetes
        TokenReview authenticator once the control plane has its API client)."""
        self.authenticators.append(authenticator)
        self.ca_service.authenticators.append(authenticator)

    def revoke(self, namespace: str, pod: str) -> bool:
        return self.credentials.revoke(namespace, pod)

    async def authorize(self, node_id: str, metadata: dict[str, Any],
                        context: grpc.aio.ServicerContext[Any, Any]) -> Hashable | None:
        try:
            return await node_principal(self.authenticators, context, node_id, metadata)
        except NodeDenied as e:
            raise StreamDenied(e.code, str(e)) from None

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
