"""Shared end-to-end helpers: an in-process control plane, real Envoy agents, in-process backends, clients.

Import from any test (``tests`` is on pytest's ``pythonpath``)::

    from harness import Mesh, mesh          # ``mesh`` is a pytest fixture yielding a started Mesh

    async def test_canary(mesh: Mesh) -> None:
        await mesh.backend("reviews", "v1", namespace="bookinfo", port=9080)
        client = await mesh.sidecar("bookinfo", "productpage-v1", {"app": "productpage", "version": "v1"})
        await mesh.apply_yaml(SERVICE_AND_VS, namespace="bookinfo")
        await mesh.wait_synced()
        async with mesh.client_via(client) as http:
            r = await http.get("http://reviews:9080/")

Every process, server and client a Mesh starts is stopped on exit. Each Mesh allocates its own loopback
addresses (127.10.x.y, in /24 blocks claimed through ``addrblocks``) so test processes of different
engineers can run at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiohttp import web

import addrblocks
from mizzen.agent.bootstrap import AGENT_ADMIN_PORT, ProxySpec
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.config.errors import ConfigError
from mizzen.controlplane.push import Generator
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.controlplane.store import ApplyResult
from mizzen.core.mesh import MeshConfig
from mizzen.core.proxy import ProxyType
from mizzen.registry.model import Workload
from mizzen.runner.credentials import InProcessCredentials, with_identity
from mizzen.security.pki import KeyAlgorithm

__all__ = [
    "Backend",
    "Mesh",
    "alloc_ip",
    "eventually",
    "free_port",
    "mesh",
]

T = TypeVar("T")

HTTP_PROXY_PORT = 15080
_hosts = itertools.count(0)
_blocks: list[int] = []   # the 127.10.<x> blocks this process claimed, in use order


def scrape(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value} (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def alloc_ip() -> str:
    """A fresh loopback address 127.10.<x>.<y>, in blocks this process claimed (:mod:`addrblocks`), so test
    processes running at once never share one."""
    n = next(_hosts)
    while len(_blocks) <= n // 250:
        _blocks.append(addrblocks.claim(10))
    return f"127.10.{_blocks[n // 250]}.{n % 250 + 2}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 5.0, interval: float = 0.05) -> T:
    """Call ``check`` until it returns without raising AssertionError/httpx errors; re-raise the last one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except (AssertionError, httpx.HTTPError):
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(interval)


# --- backends -----------------------------------------------------------------------------------------------
@dataclass
class Backend:
    """An in-process HTTP server for one workload instance; answers JSON describing itself and the request.

    Failure injection: ``fail(status, times=None)`` answers ``status`` (the next ``times`` requests, or all);
    ``delay_s`` delays every answer. ``requests`` counts requests, ``paths`` and ``hosts`` record them.
    """

    service: str
    version: str
    namespace: str
    pod: str
    ip: str
    port: int
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str = "default"
    locality: str = ""                      # region/zone/subzone of the workload (EDS locality)
    delay_s: float = 0.0
    requests: int = 0
    paths: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)     # the Host header of each request
    _fail_status: int | None = None
    _fail_left: int | None = None
    sidecar: Agent | None = None            # set when started with a sidecar (the workload address is its IP)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def fail(self, status: int, times: int | None = None) -> None:
        self._fail_status, self._fail_left = status, times

    def heal(self) -> None:
        self._fail_status = self._fail_left = None

    def reset_counts(self) -> None:
        self.requests = 0
        self.paths.clear()
        self.hosts.clear()

    @property
    def address(self) -> str:
        """The workload (pod) address: the sidecar's IP if it has one, else the app's."""
        return self.sidecar.spec.ip if self.sidecar is not None else self.ip

    def workload(self, address: str | None = None) -> Workload:
        return Workload(name=self.pod, namespace=self.namespace, address=address or self.address,
                        labels=dict(self.labels), service_account=self.service_account,
                        locality=self.locality)

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.paths.append(request.path_qs)
        self.hosts.append(request.host)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        body = {
            "service": self.service, "version": self.version, "pod": self.pod, "ip": self.ip,
            "path": request.path_qs, "method": request.method, "headers": dict(request.headers),
        }
        status = 200
        if self._fail_status is not None and (self._fail_left is None or self._fail_left > 0):
            status = self._fail_status
            if self._fail_left is not None:
                self._fail_left -= 1
        return web.json_response(body, status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.ip, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# --- the mesh -----------------------------------------------------------------------------------------------
class Mesh:
    """A control plane (ephemeral ports, temp state dir) plus whatever agents/backends a test adds."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        generator: Generator | None = None,
        debounce_quiet_s: float = 0.05,
        debounce_max_s: float = 0.5,
        envoy_log_level: str = "warning",
        mesh_config: MeshConfig | None = None,
        kubeconfig: Path | None = None,
        identities: bool = False,
        secret_ttl_s: float | None = None,
        secret_key_algorithm: KeyAlgorithm | None = None,
    ) -> None:
        """``identities``: the control plane runs the CA and its TLS port, and every agent gets a pod
        credential (as the demo's): SDS for its Envoy, xDS over TLS; ``secret_ttl_s`` their certificates'
        lifetime (default 24 h), ``secret_key_algorithm`` their keys' (default RSA 2048, as Istio's)."""
        self.identities, self.secret_ttl_s = identities, secret_ttl_s
        self.secret_key_algorithm = secret_key_algorithm
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mizzen-mesh-")
            state_dir = Path(self._tmp.name)
        self.state_dir = state_dir
        self.cp = ControlPlane(
            ControlPlaneOptions(state_dir=state_dir / "state", xds_port=0, http_port=0,
                                debounce_quiet_s=debounce_quiet_s, debounce_max_s=debounce_max_s,
                                mesh=mesh_config or MeshConfig(), kubeconfig=kubeconfig,
                                xds_tls_port=0 if identities else None),
            generator=generator,
        )
        self.envoy_log_level = envoy_log_level
        self.agents: list[Agent] = []
        self.backends: list[Backend] = []
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Mesh:
        await self.cp.start()
        self._stack.push_async_callback(self.cp.stop)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._stack.aclose()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()

    # --- config ---------------------------------------------------------------------------------------------
    async def apply_yaml(
        self, text: str, namespace: str | None = None, file: str = "test.yaml"
    ) -> list[ApplyResult]:
        """Load (with the real loader) and apply all-or-nothing; raises ConfigError with every issue."""
        result = self.cp.api.loader(text, file, namespace)
        if result.errors:
            raise ConfigError(list(result.errors))
        return self.cp.store.apply(result.configs)

    async def delete_yaml(
        self, text: str, namespace: str | None = None, file: str = "test.yaml"
    ) -> list[ApplyResult]:
        result = self.cp.api.loader(text, file, namespace)
        if result.errors:
            raise ConfigError(list(result.errors))
        return self.cp.store.delete([c.key for c in result.configs])

    async def wait_synced(self, timeout: float = 5.0) -> None:
        """Every pending change pushed and every connected proxy ACKed it."""
        await self.cp.wait_synced(timeout=timeout)

    # --- workloads ------------------------------------------------------------------------------------------
    async def backend(
        self,
        service: str,
        version: str = "v1",
        *,
        namespace: str = "default",
        port: int = 9080,
        labels: Mapping[str, str] | None = None,
        pod: str | None = None,
        register: bool = True,
        sidecar: bool = False,
        locality: str = "",
        service_account: str = "default",
    ) -> Backend:
        """Start an in-process backend on a fresh IP and register it as a workload (labels app/version).

        With ``sidecar=True`` the workload gets its own sidecar Envoy, like an injected pod: the workload
        address (pod IP) is the sidecar's, whose inbound listener forwards to the app on a second private IP
        (``backend.ip``); the agent is in ``backend.sidecar``. ``service_account``: the pod's (its identity
        with ``Mesh(identities=True)``).
        """
        ip = alloc_ip()
        pod_ip = alloc_ip() if sidecar else ip
        labels = dict(labels or {"app": service, "version": version})
        b = Backend(service=service, version=version, namespace=namespace,
                    pod=pod or f"{service}-{version}-{ip.rsplit('.', 2)[1]}x{ip.rsplit('.', 1)[1]}",
                    ip=ip, port=port, labels=labels, locality=locality, service_account=service_account)
        await b.start()
        self._stack.push_async_callback(b.stop)
        self.backends.append(b)
        if sidecar:
            b.sidecar = await self.sidecar(namespace, b.pod, labels, ip=pod_ip, app_host=ip,
                                           locality=locality, service_account=service_account)
        if register:
            self.cp.register_workload(b.workload(pod_ip))
            self._stack.callback(self.cp.remove_workload, b.namespace, b.pod)
        return b

    async def _agent(self, spec: ProxySpec, ready_timeout: float) -> Agent:
        # access log files flushed every 200 ms (Envoy's default: 10 s): tests read them soon after a request
        options = AgentOptions(log_level=self.envoy_log_level, concurrency=1, admin_token=self.cp.token,
                               extra_args=("--file-flush-interval-msec", "200"))
        if self.identities:
            options = with_identity(options, InProcessCredentials(self.cp), self.cp.xds_tls_address,
                                    spec.namespace, spec.name, spec.service_account)
            if self.secret_ttl_s is not None and options.identity is not None:
                secrets = dataclasses.replace(options.identity.secrets,
                                              ttl=dt.timedelta(seconds=self.secret_ttl_s))
                if self.secret_key_algorithm is not None:
                    secrets = dataclasses.replace(secrets, key_algorithm=self.secret_key_algorithm)
                options = dataclasses.replace(options, identity=dataclasses.replace(options.identity,
                                                                                    secrets=secrets))
        agent = Agent(spec, options)
        await agent.start(ready_timeout=ready_timeout)
        self._stack.push_async_callback(agent.stop)
        self.agents.append(agent)
        return agent

    async def sidecar(
        self,
        namespace: str,
        name: str,
        labels: Mapping[str, str] | None = None,
        *,
        ip: str | None = None,
        app_host: str = "127.0.0.1",
        ready_timeout: float = 20.0,
        locality: str = "",
        service_account: str = "default",
    ) -> Agent:
        """A sidecar Envoy on a fresh IP; outbound HTTP goes through ``<ip>:15080`` (see client_via).
        ``locality`` (region/zone/subzone) is the proxy's own locality, for locality load balancing;
        ``service_account`` the pod's (its SPIFFE identity with ``Mesh(identities=True)``)."""
        ip = ip or alloc_ip()
        spec = ProxySpec(type=ProxyType.SIDECAR, ip=ip, namespace=namespace, name=name,
                         admin_port=AGENT_ADMIN_PORT, xds_port=self.cp.xds_port, labels=dict(labels or {}),
                         app_host=app_host, http_proxy_port=HTTP_PROXY_PORT, locality=locality,
                         service_account=service_account)
        return await self._agent(spec, ready_timeout)

    async def gateway(
        self,
        namespace: str = "istio-system",
        name: str = "istio-ingressgateway",
        labels: Mapping[str, str] | None = None,
        *,
        gateway_ports: Mapping[int, int] | None = None,
        ready_timeout: float = 20.0,
    ) -> Agent:
        """A gateway (router) Envoy on a fresh IP; Gateway port 80 listens on 8080 unless remapped."""
        ip = alloc_ip()
        spec = ProxySpec(type=ProxyType.ROUTER, ip=ip, namespace=namespace, name=name,
                         admin_port=AGENT_ADMIN_PORT, xds_port=self.cp.xds_port,
                         labels=dict(labels or {"istio": "ingressgateway", "app": "istio-ingressgateway"}),
                         gateway_ports=gateway_ports)
        return await self._agent(spec, ready_timeout)

    # --- clients --------------------------------------------------------------------------------------------
    def client_via(self, sidecar: Agent, timeout: float = 10.0, **kw: Any) -> httpx.AsyncClient:
        """An HTTP client whose requests go through the sidecar's outbound ``http_proxy`` listener."""
        proxy = f"http://{sidecar.spec.ip}:{sidecar.spec.effective_http_proxy_port}"
        return httpx.AsyncClient(proxy=proxy, timeout=timeout, trust_env=False, **kw)

    def gateway_client(self, gateway: Agent, port: int = 8080, timeout: float = 10.0,
                       **kw: Any) -> httpx.AsyncClient:
        """An HTTP client for ``http://<gateway ip>:<port>``; pass ``headers={"Host": ...}`` per request."""
        return httpx.AsyncClient(base_url=f"http://{gateway.spec.ip}:{port}", timeout=timeout,
                                 trust_env=False, **kw)

    def api_client(self, timeout: float = 10.0, token: str | None = None) -> httpx.AsyncClient:
        """An HTTP client for the control plane's API/debug server, with its API token (or ``token``)."""
        return httpx.AsyncClient(base_url=self.cp.http_url, timeout=timeout, trust_env=False,
                                 headers={"Authorization": f"Bearer {token or self.cp.token}"})


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    """A started :class:`Mesh`, stopped with everything in it after the test."""
    async with Mesh() as m:
        yield m
