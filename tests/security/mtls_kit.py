"""Sidecars with workload identity for the mTLS tests, before (and independent of) the runner wiring the CA:
a real CA (gRPC on a Unix socket), per pod an ``IdentityAgent`` (key, CSR, SDS socket) and a real Envoy whose
bootstrap gets the ``sds-grpc`` cluster on that socket and the ``SDS: true`` node metadata through Envoy's
``--config-yaml`` (merged into the agent's bootstrap). Workloads are registered with Istio's
``security.istio.io/tlsMode: istio`` label, as the runner registers injected pods.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from security_kit import FAST

from harness import HTTP_PROXY_PORT, Backend, Mesh, alloc_ip
from mizzen.agent.bootstrap import AGENT_ADMIN_PORT, ProxySpec
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.core.proxy import Meta, ProxyType
from mizzen.registry.model import ISTIO_TLS_MODE, TLS_MODE_LABEL
from mizzen.security.authn import LocalCredentialAuthenticator, LocalCredentials
from mizzen.security.ca import CertificateAuthority
from mizzen.security.caserver import CAService
from mizzen.security.identity import Identity
from mizzen.security.nodeagent.agent import IdentityAgent
from mizzen.security.nodeagent.cache import SecretManagerOptions
from mizzen.security.pki import KeyAlgorithm
from mizzen.security.sdsconfig import sds_cluster

__all__ = ["MtlsMesh", "mtls_mesh", "plaintext_refused", "spiffe"]


def spiffe(namespace: str, service_account: str) -> str:
    return f"spiffe://cluster.local/ns/{namespace}/sa/{service_account}"


def sds_overlay(sds_socket: Path) -> str:
    """Merged into the agent's bootstrap: the sds-grpc cluster and the SDS node metadata."""
    return json.dumps({"node": {"metadata": {Meta.SDS: "true"}},
                       "static_resources": {"clusters": [sds_cluster(sds_socket)]}})


@dataclass
class MtlsMesh:
    mesh: Mesh
    ca: CertificateAuthority
    creds: LocalCredentials
    ca_target: str
    tmp: Path
    stack: contextlib.AsyncExitStack

    async def _identity(self, namespace: str, name: str, service_account: str) -> tuple[str, ...]:
        """Start the pod's identity agent; Envoy's extra arguments that plug its SDS socket in."""
        token = self.creds.issue(namespace, name, service_account)
        sds_socket = self.tmp / f"sds-{name}" / "socket"
        ident = IdentityAgent(Identity(namespace, service_account), self.ca_target, token, sds_socket,
                              SecretManagerOptions(ttl=dt.timedelta(hours=1),
                                                   key_algorithm=KeyAlgorithm.ECDSA, backoff_start_s=0.1))
        await ident.start()
        self.stack.push_async_callback(ident.stop)
        return ("--config-yaml", sds_overlay(sds_socket))

    async def _start(self, spec: ProxySpec, extra: tuple[str, ...]) -> Agent:
        agent = Agent(spec, AgentOptions(log_level=self.mesh.envoy_log_level, concurrency=1,
                                         admin_token=self.mesh.cp.token, extra_args=extra))
        await agent.start(ready_timeout=20)
        self.stack.push_async_callback(agent.stop)
        return agent

    async def identity_sidecar(self, namespace: str, name: str, labels: Mapping[str, str],
                               service_account: str, *, ip: str | None = None, app_host: str = "127.0.0.1",
                               sds: bool = True) -> Agent:
        """A sidecar whose agent serves it ``default``/``ROOTCA`` for ``namespace``/``service_account``."""
        extra = await self._identity(namespace, name, service_account) if sds else ()
        spec = ProxySpec(type=ProxyType.SIDECAR, ip=ip or alloc_ip(), namespace=namespace, name=name,
                         admin_port=AGENT_ADMIN_PORT, xds_port=self.mesh.cp.xds_port,
                         labels={**labels, TLS_MODE_LABEL: ISTIO_TLS_MODE} if sds else dict(labels),
                         service_account=service_account, app_host=app_host, http_proxy_port=HTTP_PROXY_PORT)
        return await self._start(spec, extra)

    async def identity_gateway(self, name: str = "istio-ingressgateway-abc") -> Agent:
        """The ingress gateway (istio-system, Istio's labels and service account) with its identity."""
        sa = "istio-ingressgateway-service-account"
        spec = ProxySpec(type=ProxyType.ROUTER, ip=alloc_ip(), namespace="istio-system", name=name,
                         admin_port=AGENT_ADMIN_PORT, xds_port=self.mesh.cp.xds_port,
                         labels={"istio": "ingressgateway", "app": "istio-ingressgateway"},
                         service_account=sa)
        return await self._start(spec, await self._identity("istio-system", name, sa))

    async def backend(self, service: str, version: str = "v1", *, namespace: str = "bookinfo",
                      port: int = 9080, service_account: str | None = None, sds: bool = True,
                      labels: Mapping[str, str] | None = None) -> Backend:
        """An in-process app behind an identity sidecar (workload address: the sidecar's IP), registered
        with the tlsMode label like an injected pod."""
        ip, pod_ip = alloc_ip(), alloc_ip()
        labels = dict(labels or {"app": service, "version": version})
        sa = service_account or f"bookinfo-{service}"
        pod = f"{service}-{version}-{ip.replace('.', 'x')}"
        b = Backend(service=service, version=version, namespace=namespace, pod=pod, ip=ip, port=port,
                    labels=labels, service_account=sa)
        await b.start()
        self.stack.push_async_callback(b.stop)
        b.sidecar = await self.identity_sidecar(namespace, b.pod, labels, sa, ip=pod_ip, app_host=ip, sds=sds)
        b.labels = dict(b.sidecar.spec.labels)
        self.mesh.cp.register_workload(b.workload(pod_ip))
        self.stack.callback(self.mesh.cp.remove_workload, b.namespace, b.pod)
        return b


@contextlib.asynccontextmanager
async def mtls_mesh(mesh: Mesh) -> AsyncIterator[MtlsMesh]:
    """A CA for ``mesh``'s sidecars; a short private temp dir (Unix socket paths are short), removed."""
    tmp = Path(tempfile.mkdtemp(prefix="mzm-"))
    try:
        async with _mtls_mesh(tmp, mesh) as m:
            yield m
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.asynccontextmanager
async def _mtls_mesh(tmp: Path, mesh: Mesh) -> AsyncIterator[MtlsMesh]:
    ca = CertificateAuthority.self_signed(tmp / "ca-state", FAST)
    creds = LocalCredentials()
    service = CAService(ca, [LocalCredentialAuthenticator(creds)])
    target = f"unix:{tmp / 'ca.sock'}"
    async with contextlib.AsyncExitStack() as stack:
        await service.serve(target)
        stack.push_async_callback(service.stop)
        yield MtlsMesh(mesh, ca, creds, target, tmp, stack)


def plaintext_refused(ip: str, port: int, timeout: float = 5.0) -> bool:
    """One plaintext HTTP request from outside the mesh: True when no HTTP response comes back (the
    connection is refused, reset or closed)."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = s.recv(64)
    except (ConnectionError, TimeoutError, OSError):
        return True
    return not data.startswith(b"HTTP/")
