"""Pod credentials, the runner's side (the kubelet mounting a pod's service-account token, locally).

For every pod with a proxy the runner asks the control plane for a credential bound to the pod's namespace,
service account and name (:class:`HttpCredentials`: ``POST /apis/credentials`` with the API token, which only
the runner holds; :class:`InProcessCredentials` for an embedded control plane) and writes it, with the mesh
roots, into the pod's private work dir as 0600 files just before the agent reads them (never into the
environment or a command line). When the pod stops, the credential is revoked and the file removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from mizzen.agent.envoy import AgentOptions
from mizzen.agent.identity import CREDENTIAL_FILE, ROOT_CERT_FILE, IdentityOptions
from mizzen.security.files import write_private_file

__all__ = ["CredentialIssuer", "HttpCredentials", "InProcessCredentials", "with_identity"]


class CredentialIssuer(Protocol):
    async def issue(self, namespace: str, pod: str, service_account: str) -> tuple[str, str]:
        """(credential, mesh roots PEM)."""
        ...

    async def revoke(self, namespace: str, pod: str) -> None: ...


class InProcessCredentials:
    """For a control plane in this process (tests, embedders): ``ControlPlane.identity``."""

    def __init__(self, control_plane: Any) -> None:
        self.cp = control_plane

    async def issue(self, namespace: str, pod: str, service_account: str) -> tuple[str, str]:
        if self.cp.identity is None:
            raise RuntimeError("the control plane runs no CA (xds_tls_port is not set)")
        issued = self.cp.identity.issue(namespace, pod, service_account)
        return issued.credential, issued.root_cert

    async def revoke(self, namespace: str, pod: str) -> None:
        if self.cp.identity is not None:
            self.cp.identity.revoke(namespace, pod)


class HttpCredentials:
    """Through the control plane's API at ``base_url`` with the API token. While the control plane is away
    (a restart) or not ready (5xx), issuing retries with backoff for up to ``retry_s``; a refusal (4xx) is
    final."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 10.0, retry_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retry_s = retry_s

    async def issue(self, namespace: str, pod: str, service_account: str) -> tuple[str, str]:
        body = {"namespace": namespace, "pod": pod, "serviceAccount": service_account}
        deadline = asyncio.get_running_loop().time() + self.retry_s
        delay = 0.2
        while True:
            try:
                async with (
                    aiohttp.ClientSession(timeout=self.timeout, headers=self._headers, trust_env=False) as s,
                    s.post(f"{self.base_url}/apis/credentials", json=body) as r,
                ):
                    if r.status == 200:
                        data = await r.json()
                        return str(data["credential"]), str(data["rootCert"])
                    text = (await r.text()).strip().splitlines()
                    problem = f"HTTP {r.status} {text[0] if text else ''}".strip()
                    if r.status < 500:
                        raise RuntimeError(f"pod credential for {namespace}/{pod}: {problem}")
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                problem = f"control plane unreachable ({type(e).__name__})"
            if asyncio.get_running_loop().time() + delay > deadline:
                raise RuntimeError(f"pod credential for {namespace}/{pod}: {problem}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def revoke(self, namespace: str, pod: str) -> None:
        async with (
            aiohttp.ClientSession(timeout=self.timeout, headers=self._headers, trust_env=False) as s,
            s.delete(f"{self.base_url}/apis/credentials/{namespace}/{pod}") as r,
        ):
            if r.status not in (200, 404):
                raise RuntimeError(f"revoking the credential of {namespace}/{pod}: HTTP {r.status}")


def with_identity(options: AgentOptions, issuer: CredentialIssuer, ca_address: str, namespace: str, pod: str,
                  service_account: str) -> AgentOptions:
    """``options`` for an agent whose pod gets its credential from ``issuer`` when it starts."""
    written: list[Path] = []

    async def provision(work_dir: Path) -> None:
        credential, roots = await issuer.issue(namespace, pod, service_account)
        write_private_file(work_dir / CREDENTIAL_FILE, credential.encode())
        write_private_file(work_dir / ROOT_CERT_FILE, roots.encode())
        written[:] = [work_dir / CREDENTIAL_FILE]

    async def release() -> None:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        await issuer.revoke(namespace, pod)

    return dataclasses.replace(options, identity=IdentityOptions(ca_address=ca_address, provision=provision,
                                                                 release=release))
