"""The control-plane process (istiod's job): wires the config store, the registry, the debounced push loop,
the xDS (ADS) gRPC server and the HTTP API/debug server, and starts/stops them as one.

A config change becomes a PushRequest naming the changed objects; a workload registration or removal one
naming the services whose endpoints changed (an EDS-only push). The debouncer merges requests; the Pusher
regenerates only what they can affect (see controlplane.push). A newly connected proxy is generated
immediately from the current PushContext, admitted at a bounded rate (Istio's PILOT_MAX_REQUESTS_PER_SECOND);
pushes wake at most PILOT_PUSH_THROTTLE proxies per event-loop turn.

The HTTP API needs the API token (:mod:`mizzen.auth`): ``options.token`` if given, else the token file
(``options.token_file``, default ``<state dir>/token``, created at first start with mode 0600), else (an
in-memory control plane) a fresh random token, readable by the embedder as :attr:`ControlPlane.token`.
Gateways may bind only loopback addresses unless ``mesh.allow_external_bind`` is set (see
:mod:`.exposure`).

Registry readiness gates xDS: with ``await_workload_sync_s`` set (a control plane whose workloads are
registered by a separate runner, like the demo's), a proxy's stream is held before its first response until
the runner has sent its full set of workloads (``sync_workloads``, ``PUT /apis/workloads``), or that many
seconds have passed; so a restarted control plane never pushes endpoints it has not reconciled yet.

With ``xds_tls_port`` set (``mizzen controlplane`` and the demo: 15012, like istiod) the control plane runs
the mesh CA and serves xDS and ``IstioCertificateService`` over TLS on that port, every stream authenticated
and held to its own node (:mod:`.identity`); the plaintext ``xds_port`` stays for tests and raw-ADS
benchmarks, as istiod keeps 15010.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web

from mizzen import telemetry
from mizzen.auth.guard import Guard
from mizzen.auth.token import TOKEN_ENV, ensure_token, new_token
from mizzen.config import kinds
from mizzen.config.env import env_duration, env_float, env_int
from mizzen.config.model import Config, ConfigKey
from mizzen.console.addons import read_addons
from mizzen.console.app import Console
from mizzen.console.sessions import COOKIE, Sessions
from mizzen.controlplane.api import Api, Loader
from mizzen.controlplane.events import EventLog
from mizzen.controlplane.exposure import gateway_bind_issues
from mizzen.controlplane.identity import MeshIdentity
from mizzen.controlplane.limits import RateLimiter
from mizzen.controlplane.metrics import CONFIG_EVENTS, Metrics, ObservedStatus
from mizzen.controlplane.persist import StateDir
from mizzen.controlplane.pods_proxy import PodsProxy
from mizzen.controlplane.proxy_debug import ProxyDebugHub, admin_path
from mizzen.controlplane.push import Generator, Pusher
from mizzen.controlplane.store import UNCHANGED, ApplyResult, ConfigStore, Validator
from mizzen.controlplane.workload_addresses import WorkloadAddresses
from mizzen.core import generate, sds
from mizzen.core.mesh import MeshConfig
from mizzen.core.mtls import identity_changes
from mizzen.core.push_context import PushContext
from mizzen.core.push_request import PushRequest, WorkloadKey
from mizzen.registry.model import RegistrySnapshot, Workload
from mizzen.registry.registry import Registry
from mizzen.security import authz
from mizzen.tracing import register_plugin as register_tracing
from mizzen.xds import AdsServer, Debouncer, SnapshotCache, serve

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

    from mizzen.controlplane.distribution import DistributionTracker
    from mizzen.kube.casecret import CASecretDir
    from mizzen.kube.config_source import KubeConfigSource
    from mizzen.kube.discovery import NamespaceFilter
    from mizzen.kube.distribution import DistributionStatusWriter
    from mizzen.kube.distribution_reporter import DistributionReporter
    from mizzen.kube.ha import LeaderWork
    from mizzen.kube.inject.values import InjectConfig
    from mizzen.kube.leader import Timing
    from mizzen.kube.registry_source import KubeRegistrySource
    from mizzen.kube.status import AnalysisStatusWriter
    from mizzen.kube.webhooks.patcher import WebhookPatcher
    from mizzen.kube.webhooks.server import AdmissionServer

log = logging.getLogger(__name__)

generate.register(sds.SecretGenerator())   # gateway credentialName: istiod's SecretGen on the push table

__all__ = [
    "DEFAULT_HTTP_PORT",
    "DEFAULT_XDS_PORT",
    "DEFAULT_XDS_TLS_PORT",
    "ControlPlane",
    "ControlPlaneOptions",
]

DEFAULT_XDS_PORT = 15010
DEFAULT_XDS_TLS_PORT = 15012
DEFAULT_HTTP_PORT = 15014


@dataclass
class ControlPlaneOptions:
    state_dir: Path | None = None          # None: in memory only
    xds_host: str = "127.0.0.1"
    xds_port: int = DEFAULT_XDS_PORT       # 0 = ephemeral (see ControlPlane.xds_port)
    # xDS + the CA over TLS (istiod's 15012; 0 = ephemeral); None: no CA and no TLS port (embedders, tests)
    xds_tls_port: int | None = None
    ca_dir: Path | None = None             # a plugged-in CA (Istio's cacerts files); None: self-signed
    http_host: str = "127.0.0.1"
    http_port: int | None = DEFAULT_HTTP_PORT   # 0 = ephemeral, None = no HTTP server
    mesh: MeshConfig = field(default_factory=MeshConfig)
    debounce_quiet_s: float = 0.1
    debounce_max_s: float = 1.0
    # the first change after a quiet period is pushed after only this long (None: always wait for quiet); 0:
    # on the event loop's next turn, with what that turn changed. A timer here costs more than it says: the
    # loop sleeps, other processes (the proxies) take the CPUs, and waking up waits for one (bench/README.md)
    debounce_lead_s: float | None = 0.0
    # Registered workloads are kept in the state dir, so a restarted control plane serves the same endpoints
    # at once (like istiod re-listing pods) instead of pushing empty clusters; a runner that starts every
    # workload itself (the demo) passes False and re-registers.
    restore_workloads: bool = True
    token: str | None = None               # the API token; None: from token_file
    token_file: Path | None = None         # None: <state_dir>/token (no state dir: a random in-memory token)
    # a second API listener on this Unix socket (mode 0600): its file permissions are the credential
    api_socket: Path | None = None
    # Istio's PILOT_MAX_REQUESTS_PER_SECOND (new xDS streams admitted per second; 0 = by CPU count) and
    # PILOT_PUSH_THROTTLE (proxies whose new config is handed out per event-loop turn during a push)
    max_requests_per_second: float = field(
        default_factory=lambda: env_float("PILOT_MAX_REQUESTS_PER_SECOND", 0.0))
    push_throttle: int = field(default_factory=lambda: env_int("PILOT_PUSH_THROTTLE", 0))
    # Istio's PILOT_XDS_SEND_TIMEOUT in seconds (0 = none, Istio's default): a response write that takes
    # longer closes the stream and counts in pilot_xds_write_timeout
    xds_send_timeout_s: float = field(default_factory=lambda: env_duration("PILOT_XDS_SEND_TIMEOUT", 0.0))
    # read config (Istio's kinds and Services) from this cluster's API server instead of applies through the
    # API (mizzen.kube.config_source); xDS is served once every kind has been listed
    kubeconfig: Path | None = None
    # the admission webhooks over HTTPS (istiod's 15017; 0 = ephemeral; None = off), on webhook_host (None:
    # xds_host); needs the mesh CA (xds_tls_port). In Kubernetes mode the webhooks' caBundle and
    # failurePolicy are kept up to date (mizzen.kube.webhooks.patcher) for this revision (Istio's REVISION)
    webhook_port: int | None = None
    webhook_host: str | None = None
    revision: str = field(default_factory=lambda: os.environ.get("REVISION", ""))
    # the same from inside a pod: the API server and credentials of its service account (mizzen install's
    # istiod Deployment)
    in_cluster: bool = False

    def resolve_token(self) -> tuple[str, Path | None]:
        """(the API token, the file it lives in or None)."""
        if self.token:
            return self.token, None
        path = self.token_file or (self.state_dir / "token" if self.state_dir is not None else None)
        if path is None:
            return new_token(), None
        return ensure_token(path), path
    # an API request body must arrive within this long (408 and the connection closed otherwise)
    body_timeout_s: float = 10.0
    # hold xDS until the runner's full workload set arrives (sync_workloads), at most this long (None: never)
    await_workload_sync_s: float | None = None
    # the runner's pod API (``mizzen demo``): /apis/pods is forwarded there (None: "this control plane runs
    # no pods")
    pods_url: str | None = None
    # the console's backends; None: those ``mizzen demo`` wrote into <state dir>/addons.json, if any
    prometheus_url: str | None = None
    jaeger_url: str | None = None


def _auto_rate(value: float) -> float:
    """0 or unset: 100 new streams per second per core (a reconnect storm of 2,000 takes ~10 s on 2 cores)."""
    return value if value > 0 else 100.0 * (os.cpu_count() or 1)


class ControlPlane:
    """``async with ControlPlane(opts) as cp:`` or ``await cp.start()`` / ``await cp.stop()``."""

    def __init__(
        self,
        options: ControlPlaneOptions | None = None,
        *,
        generator: Generator | None = None,
        validator: Validator | None = None,
        loader: Loader | None = None,
    ) -> None:
        self.options = opts = options or ControlPlaneOptions()
        register_tracing()     # Envoy's tracer on HTTP chains when the mesh config names a collector
        self.token, self.token_file = opts.resolve_token()
        authz.register()   # AuthorizationPolicy / RequestAuthentication filters: inbound and gateway chains
        # one StateDir for the directory: objects (the store) and registered workloads (here); object files
        # are written off the event loop, the journal record is the synchronous commit point; the gateway bind
        # policy runs on every apply, also on batches validated in the parse worker
        self._state = StateDir(opts.state_dir, background=True) if opts.state_dir is not None else None
        self.store = ConfigStore(self._state, validator=validator,
                                 checks=lambda c: gateway_bind_issues(c, opts.mesh.allow_external_bind))
        self.registry = Registry(opts.mesh.domain_suffix)
        if self._state is not None:
            if opts.restore_workloads:
                workloads, _problems = self._state.load_workloads()
                for w in workloads:
                    self.registry.register_workload(w)
            else:
                for w in self._state.load_workloads()[0]:
                    self._state.remove_workload(w.namespace, w.name)
        self.registry.set_configs(self.store.snapshot())
        self.cache = SnapshotCache()
        self.metrics = Metrics()
        self.status = ObservedStatus(self.cache, self.metrics)
        self.pusher = Pusher(self.cache, self.store.snapshot, self.registry.snapshot, opts.mesh, generator,
                             throttle=opts.push_throttle or 100, metrics=self.metrics,
                             on_changed=self.status.changed)
        rate = _auto_rate(opts.max_requests_per_second)
        self.admission = RateLimiter(rate, burst=max(1, int(rate)))
        self.identity: MeshIdentity | None = None
        # on a cluster without --ca-dir the CA's root lives in a Secret (mizzen.kube.casecret), read at start
        self._ca_from_cluster = (opts.xds_tls_port is not None and opts.ca_dir is None
                                 and (opts.kubeconfig is not None or opts.in_cluster))
        if opts.xds_tls_port is not None and not self._ca_from_cluster:
            self.identity = MeshIdentity(opts.state_dir, opts.ca_dir, opts.mesh.trust_domain)
        # agents' debug channels (TLS port): proxy-config and Envoy's logs of pods on a cluster
        self.proxy_debug = (ProxyDebugHub(lambda: self.identity.authenticators if self.identity else ())
                            if opts.xds_tls_port is not None else None)   # (the identity may come later)
        # the address-to-workload map agents expand TCP source labels with (both xDS ports)
        self.workload_addresses = WorkloadAddresses(
            self.registry.snapshot, lambda: self.identity.authenticators if self.identity else (),
            tls_only=lambda: self.identity is not None)
        self.ads = AdsServer(self.cache, on_connect=self._on_connect, on_disconnect=self._on_disconnect,
                             status=self.status, write_timeout=opts.xds_send_timeout_s,
                             authorize=self._authorize if opts.xds_tls_port is not None else None)
        where = (f'the mizzen CLI reads it from {self.token_file} (or ${TOKEN_ENV})' if self.token_file
                 else f'this control plane keeps it in memory: its embedder passes it as ${TOKEN_ENV}')
        self.events = EventLog()
        self.store.add_listener(self.events.record)
        self.sessions = Sessions()
        self.api = Api(self, loader, Guard(self.token, self._served, hint=where, session_cookie=COOKIE,
                                           session_valid=self.sessions.valid))
        # a large apply's rebuild and staging on the loop let a running push finish before their next slice
        self.store.pause = self.api.parser.pause = self.pusher.make_way
        self.console = Console(self.sessions, self._addons)
        if self.proxy_debug is not None:
            self.api.add_routes(self.proxy_debug.routes())
        self.api.add_routes(self.console.routes())
        if opts.pods_url:
            pods = PodsProxy(opts.pods_url, token=self.token)
            self.api.add_routes(pods.routes())
            self.api.workload_address_check = pods.address_check
        elif opts.kubeconfig is not None or opts.in_cluster:   # the cluster's Pods, as its registry sees them
            from mizzen.kube.pods_view import ApiServerLogs, KubePodsApi

            hub = self.proxy_debug
            self.api.add_routes(KubePodsApi(
                self._kube_pods,
                admin_path=self._pod_admin_path if hub is not None else None,
                proxy_logs=hub.logs if hub is not None else None,
                app_logs=ApiServerLogs(lambda: self._kube_api, self._kube_pods)).routes())
        self.workloads_synced = asyncio.Event()
        if opts.await_workload_sync_s is None:
            self.workloads_synced.set()
        self._sync_timer: asyncio.TimerHandle | None = None
        self.started = False
        self._telemetry_held = False   # our share of the process's telemetry listener plugin (start to stop)
        self.kube_source: KubeConfigSource | None = None
        self.discovery: NamespaceFilter | None = None
        self._kube_api: ApiClient | None = None
        self._kube_task: asyncio.Task[None] | None = None
        self.kube_registry: KubeRegistrySource | None = None
        self._kube_registry_task: asyncio.Task[None] | None = None
        self.webhooks: AdmissionServer | None = None
        self._mesh_text: str | None = None     # the cluster's mesh config ConfigMap, as the injector reads it
        self._injector_data: dict[str, str] | None = None   # the istio-sidecar-injector ConfigMap's data
        self._inject_config: tuple[Hashable, InjectConfig] | None = None
        self.webhook_patcher: WebhookPatcher | None = None
        self._ca_secret: CASecretDir | None = None
        self.leader_work: LeaderWork | None = None    # leader-only work on a cluster (mizzen.kube.ha)
        self.status_writer: AnalysisStatusWriter | None = None   # PILOT_ENABLE_ANALYSIS (mizzen.kube.status)
        # PILOT_ENABLE_STATUS: what the proxies ACKed, and the Reconciled status written from it
        self.distribution: DistributionTracker | None = None
        self.distribution_writer: DistributionStatusWriter | None = None
        self.distribution_reporter: DistributionReporter | None = None
        self._reporter_task: asyncio.Task[None] | None = None
        self._distribution_unsubscribe: Callable[[], None] | None = None
        self._status_unsubscribe: Callable[[], None] | None = None
        self._leader_task: asyncio.Task[None] | None = None
        self._election_timing: Timing | None = None
        if opts.kubeconfig is not None or opts.in_cluster:   # a bad $MIZZEN_LEADER_ELECTION_TTL: no I/O
            from mizzen.kube.leader import timing_from_env

            self._election_timing = timing_from_env()
        self.mesh_config_problem: str | None = None   # why the cluster's mesh config is not used
        self._debouncer: Debouncer[PushRequest] | None = None
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._http_port: int | None = None
        self._unsubscribe = self.store.add_listener(self._on_config_change)

    def _addons(self) -> dict[str, str]:
        """The console's backends: the options' URLs, else those the demo wrote into the state dir."""
        opts = self.options
        urls = read_addons(opts.state_dir) if opts.state_dir is not None else {}
        if opts.prometheus_url:
            urls["prometheus"] = opts.prometheus_url
        if opts.jaeger_url:
            urls["jaeger"] = opts.jaeger_url
        return urls

    # --- addresses ------------------------------------------------------------------------------------------
    @property
    def xds_port(self) -> int:
        if self.ads.port is None:
            raise RuntimeError("control plane not started")
        return self.ads.port

    @property
    def xds_address(self) -> str:
        return f"{self.options.xds_host}:{self.xds_port}"

    @property
    def xds_tls_port(self) -> int:
        if self.ads.tls_port is None:
            raise RuntimeError("control plane not started with an xDS TLS port")
        return self.ads.tls_port

    @property
    def xds_tls_address(self) -> str:
        """xDS and the CA over TLS (what agents use: Istio's CA_ADDR / discoveryAddress)."""
        return f"{self.options.xds_host}:{self.xds_tls_port}"

    @property
    def http_port(self) -> int:
        if self._http_port is None:
            raise RuntimeError("HTTP server not started")
        return self._http_port

    def _served(self) -> list[tuple[str, int]]:
        return [(self.options.http_host, self._http_port)] if self._http_port is not None else []

    @property
    def http_url(self) -> str:
        return f"http://{self.options.http_host}:{self.http_port}"

    # --- lifecycle ------------------------------------------------------------------------------------------
    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.started:
            return
        if not self._telemetry_held:
            telemetry.acquire()    # the telemetry listener plugin (metrics, access logs, Telemetry API)
            self._telemetry_held = True
        opts = self.options
        lead = opts.debounce_lead_s
        if lead is not None:
            lead = min(lead, opts.debounce_quiet_s)
        self._debouncer = Debouncer(self._push, merge=PushRequest.merge, quiet=opts.debounce_quiet_s,
                                    max_delay=opts.debounce_max_s, lead=lead)
        try:
            if opts.webhook_port is not None and not self._ca_from_cluster:
                await self._start_webhooks(opts.webhook_port)
            if opts.kubeconfig is not None or opts.in_cluster:
                await self._start_kube(opts.kubeconfig)
            if self.identity is not None and opts.xds_tls_port is not None:
                self._grpc = await serve(self.ads, opts.xds_host, opts.xds_port,
                                         tls=(self.identity.server_credentials(), opts.xds_tls_port),
                                         handlers=(self.identity.ca_service.rpc_handler(),
                                                   self.workload_addresses.rpc_handler(),
                                                   *([self.proxy_debug.rpc_handler()] if self.proxy_debug
                                                     else [])))
            else:
                self._grpc = await serve(self.ads, opts.xds_host, opts.xds_port,
                                         handlers=(self.workload_addresses.rpc_handler(),))
            if opts.http_port is not None:
                # lingering_time: a client that declared more body than it sends is cut off after 1 s
                runner = web.AppRunner(self.api.app(), access_log=None, handle_signals=False,
                                       lingering_time=1.0)
                await runner.setup()
                self._http = runner
                site = web.TCPSite(runner, opts.http_host, opts.http_port, reuse_address=True)
                await site.start()
                self._http_port = _bound_port(runner)
                if opts.api_socket is not None:
                    await _serve_socket(runner, opts.api_socket)
        except BaseException:
            await self.stop()
            raise
        self.started = True
        if not self.workloads_synced.is_set():
            self._sync_timer = asyncio.get_running_loop().call_later(
                opts.await_workload_sync_s or 0.0, self._workload_sync_timed_out)
        log.info("control plane up: xDS %s%s, HTTP %s, %d objects", self.xds_address,
                 f" (TLS + CA {self.xds_tls_address})" if self.ads.tls_port else "",
                 self.http_url if self._http else "off", len(self.store))

    async def _start_kube(self, kubeconfig: Path | None) -> None:
        from mizzen.kube.client import connect
        from mizzen.kube.config_source import KubeConfigSource
        from mizzen.kube.discovery import NamespaceFilter
        from mizzen.kube.inject.webhook import injector_configmap_name
        from mizzen.kube.registry_source import KubeRegistrySource

        self._kube_api = await connect(kubeconfig, in_cluster=kubeconfig is None)
        if self._ca_from_cluster:
            await self._cluster_identity(self._kube_api)
            if self.options.webhook_port is not None:   # its serving certificate is from the cluster's CA
                await self._start_webhooks(self.options.webhook_port)
        if self.identity is not None:     # pods' projected istio-ca tokens, checked by TokenReview
            from mizzen.kube.tokenreview import KubeJWTAuthenticator
            self.identity.add_authenticator(KubeJWTAuthenticator(self._kube_api, self.identity.trust_domain))
        self.discovery = NamespaceFilter()   # meshConfig discoverySelectors (set by _kube_mesh)
        self.kube_source = KubeConfigSource(self._kube_api, self.store, namespaces=self.discovery)
        self.kube_registry = KubeRegistrySource(
            self._kube_api, self.registry, on_endpoints=self._kube_endpoints, on_mesh=self._kube_mesh,
            on_injector=self._kube_injector,
            injector_configmap=injector_configmap_name(self.options.revision),
            system_namespace=self._config_namespace(), namespaces=self.discovery)
        self._kube_task = asyncio.create_task(self.kube_source.run(), name="kube config source")
        self._kube_registry_task = asyncio.create_task(self.kube_registry.run(), name="kube registry")
        # istiod serves xDS once its informers have synced (the registry's first: its Namespaces and mesh
        # config settle which namespaces the config source reads)
        await self.kube_registry.wait_synced(timeout=60)
        await self.kube_source.wait_synced(timeout=60)
        if self.webhooks is not None and self.kube_registry.injector_data is None:
            self._kube_injector(None)   # say once that the chart's defaults are used
        log.info("config and services from the Kubernetes API server (%s): %d objects, %d services",
                 kubeconfig or "in-cluster", len(self.store), len(self.registry.snapshot().services))
        if self.identity is not None:
            self._start_leader_work(self._kube_api, self.identity)
        if self.identity is not None and self.proxy_debug is not None:
            self._start_peers(self.identity)

    async def _cluster_identity(self, api: ApiClient) -> None:
        """The CA from the cluster's cacerts / istio-ca-secret Secret, shared by every replica."""
        from mizzen.kube.casecret import load_ca_secret
        from mizzen.kube.ha import system_namespace
        from mizzen.security.ca import CAOptions

        opts = self.options
        self._ca_secret = await load_ca_secret(api, system_namespace(opts.mesh.root_namespace),
                                               CAOptions(trust_domain=opts.mesh.trust_domain))
        try:
            self.identity = MeshIdentity(opts.state_dir, self._ca_secret.directory, opts.mesh.trust_domain)
        finally:   # the CA holds the material in memory now: no key file outlives this (not even a kill -9)
            self._ca_secret.close()

    def _start_peers(self, identity: MeshIdentity) -> None:
        """Debug requests for pods connected to another replica go there (:mod:`.proxy_peers`): the peers
        are istiod's Service endpoints, authenticated by a token keyed by the CA both replicas share."""
        from mizzen.controlplane.proxy_peers import PeerAuthenticator, Peers, peer_key
        from mizzen.kube.ha import system_namespace
        from mizzen.kube.leader import holder_identity
        from mizzen.kube.peers import istiod_service, peer_addresses
        from mizzen.security.identity import Identity

        hub, opts = self.proxy_debug, self.options
        assert hub is not None
        ns = system_namespace(opts.mesh.root_namespace)
        service, me = istiod_service(opts.revision), holder_identity()
        keys: dict[int, bytes] = {}

        def key() -> bytes:
            material = identity.ca.material
            if id(material) not in keys:
                keys.clear()
                keys[id(material)] = peer_key(material.key)
            return keys[id(material)]

        def addresses() -> list[str]:
            slices = self.kube_registry.slices.items.values() if self.kube_registry is not None else ()
            return peer_addresses(slices, ns, service, self_pod=me,
                                  self_addresses=[self.xds_tls_address] if self.ads.tls_port else [])

        hub.peers = Peers(addresses, lambda: identity.ca.trust_bundle.pem, key)
        hub.instance, hub.syncz = me, self.api.syncz_entries   # proxy-status across the replicas
        hub.peer_authenticator = PeerAuthenticator(key, Identity(ns, "istiod", identity.trust_domain))

    def _start_leader_work(self, api: ApiClient, identity: MeshIdentity) -> None:
        """Leader elections for the work one replica does: istio-ca-root-cert in every namespace (and what
        other kube wiring adds to ``self.leader_work``)."""
        from mizzen.kube.ha import LeaderWork, system_namespace
        from mizzen.kube.leader import NAMESPACE_CONTROLLER, Timing, holder_identity
        from mizzen.kube.rootcert import RootCertPublisher

        self.leader_work = LeaderWork(api, system_namespace(self.options.mesh.root_namespace),
                                      holder_identity(),
                                      self._election_timing or Timing())
        self.leader_work.add(NAMESPACE_CONTROLLER, "istio-ca-root-cert",
                             RootCertPublisher(api, lambda: identity.ca.trust_bundle.pem,
                                               namespaces=self.discovery).run)
        if self.webhooks is not None:
            self._add_webhook_patcher(api, self.leader_work)
        self._add_status_writer(api, self.leader_work)
        self._add_distribution_writer(api, self.leader_work)
        self._leader_task = asyncio.create_task(self.leader_work.run(), name="leader elections")

    async def _authorize(self, node_id: str, metadata: dict[str, Any],
                         context: grpc.aio.ServicerContext[Any, Any]) -> Hashable | None:
        """The TLS port's stream check (the identity exists before the port is served)."""
        assert self.identity is not None
        return await self.identity.authorize(node_id, metadata, context)

    async def _start_webhooks(self, port: int) -> None:
        """The admission server: ``/validate`` and ``/inject`` (the sidecar injector, with Istio's chart
        values and the cluster's mesh config)."""
        from mizzen.kube.webhooks.server import AdmissionServer, is_ip, webhook_dns_names
        from mizzen.kube.webhooks.validation import ValidationHandler
        from mizzen.security.serving import ServingCertificate

        opts = self.options
        if self.identity is None:
            raise ValueError("the admission webhooks need the mesh CA: set xds_tls_port")
        host = opts.webhook_host or opts.xds_host
        extra = (host,) if is_ip(host) and not ipaddress.ip_address(host).is_unspecified else ()
        # the names of istiod's Service in the control plane's own namespace ($POD_NAMESPACE), where the
        # webhook configurations point; not the mesh's root namespace when the two differ
        serving = ServingCertificate(self.identity.ca, webhook_dns_names(
            self._config_namespace(), opts.revision, extra))
        validate = ValidationHandler(lambda c: gateway_bind_issues(c, opts.mesh.allow_external_bind),
                                     self._count_validation)
        self.webhooks = AdmissionServer(serving, {"/validate": validate, "/inject": self._inject})
        await self.webhooks.start(host, port)

    def _inject(self, request: dict[str, Any]) -> dict[str, Any]:
        """``/inject``: kube.inject's AdmissionResponse for a Pod, with the revision's
        ``istio-sidecar-injector`` ConfigMap (``config`` + ``values``, as Istio's webhook reads them) and
        the cluster's ``istio`` mesh config ConfigMap; the chart's defaults only while that ConfigMap is
        absent."""
        from mizzen.kube.inject.webhook import inject_review

        return inject_review(request, self._current_inject_config())

    def _current_inject_config(self) -> InjectConfig:
        """The InjectConfig of the current ConfigMaps, parsed once per change of either; one that cannot be
        used is logged and the last good one kept (as Istio's webhook keeps its config)."""
        from mizzen.kube.inject.values import InjectConfig, ValuesError
        from mizzen.kube.inject.webhook import injector_configmap_name

        mesh, injector = self._mesh_text, self._injector_data
        key = (mesh, tuple(sorted(injector.items())) if injector is not None else None)
        cached = self._inject_config
        if cached is None or cached[0] != key:
            try:
                cfg = InjectConfig.parse((injector or {}).get("values"), mesh, (injector or {}).get("config"))
            except ValuesError as e:
                name = injector_configmap_name(self.options.revision)
                log.warning("injection: ConfigMap %s/%s or the mesh config not usable (%s); keeping the %s",
                            self._config_namespace(), name, e,
                            "last good config" if cached is not None else "chart's defaults")
                cfg = cached[1] if cached is not None else InjectConfig()
            cached = (key, cfg)
            self._inject_config = cached
        return cached[1]

    def _kube_injector(self, data: dict[str, str] | None) -> None:
        """The injector's ConfigMap changed (or went away): the next ``/inject`` uses it."""
        from mizzen.kube.inject.webhook import injector_configmap_name

        self._injector_data = data
        name = f"{self._config_namespace()}/{injector_configmap_name(self.options.revision)}"
        if data is None:
            log.info("injection: ConfigMap %s absent; injecting with the chart's defaults", name)
        else:
            log.info("injection: config from ConfigMap %s", name)
            self._current_inject_config()   # a bad one is logged now, not at the next pod

    def _count_validation(self, gvr: tuple[str, str, str], reason: str | None) -> None:
        """istiod's webhook metrics: ``galley_validation_passed`` / ``_failed`` by resource (and reason)."""
        group, version, resource = gvr
        if reason is None:
            self.metrics.validation_passed.labels(group=group, version=version, resource=resource).inc()
        else:
            self.metrics.validation_failed.labels(group=group, version=version, resource=resource,
                                                  reason=reason).inc()
    def _add_webhook_patcher(self, api: ApiClient, work: LeaderWork) -> None:
        """Keep the validating webhooks' caBundle and failurePolicy current: leader-only work, like Istio's
        validation controller (its election id)."""
        from mizzen.kube.leader import VALIDATION_CONTROLLER
        from mizzen.kube.webhooks.patcher import WebhookPatcher

        assert self.identity is not None
        ca = self.identity.ca
        patcher = self.webhook_patcher = WebhookPatcher(lambda: ca.trust_bundle.pem,
                                                        namespace=self._config_namespace(),
                                                        revision=self.options.revision)
        work.add(VALIDATION_CONTROLLER, "webhook patcher", lambda: patcher.run(api))

    def _add_status_writer(self, api: ApiClient, work: LeaderWork) -> None:
        """Istio's ``PILOT_ENABLE_ANALYSIS``: the analyzers' messages in each config object's
        ``status.validationMessages``, written by the leader of ``istio-analyze-leader`` only."""
        from mizzen.analysis import CODES
        from mizzen.kube.leader import ANALYZE_CONTROLLER, holder_identity
        from mizzen.kube.status import (
            AnalysisStatusWriter,
            Finding,
            analysis_enabled,
            analysis_interval,
            field_manager,
        )

        source = self.kube_source
        if not analysis_enabled() or source is None:
            return

        async def findings() -> list[Finding]:
            return [Finding(i.kind, i.namespace, i.name, i.code, CODES.get(i.code, ("", None))[0], i.severity)
                    for i in await self.api.analysis() if i.code]

        writer = self.status_writer = AnalysisStatusWriter(
            api, source.statuses, lambda: [c.key for c in self.store.snapshot()], findings,
            field_manager(holder_identity()), analysis_interval())
        source.on_status = writer.mark
        self._status_unsubscribe = self.store.add_listener(
            lambda results: writer.mark() if any(r.action != UNCHANGED for r in results) else None)
        work.add(ANALYZE_CONTROLLER, "analysis status", writer.run)

    def _add_distribution_writer(self, api: ApiClient, work: LeaderWork) -> None:
        """Istio's ``PILOT_ENABLE_STATUS``: each accepted config object's ``observedGeneration`` and
        ``Reconciled`` condition from what the connected proxies ACKed (:mod:`.distribution`), written by the
        leader of ``istio-status-leader`` only (:mod:`mizzen.kube.distribution`)."""
        from mizzen.controlplane.distribution import DistributionTracker
        from mizzen.kube.distribution import (
            DistributionStatusWriter,
            status_enabled,
            status_qps,
            update_interval,
        )
        from mizzen.kube.distribution_report import ReportIndex, heartbeat
        from mizzen.kube.distribution_reporter import DistributionReporter
        from mizzen.kube.leader import STATUS_CONTROLLER, holder_identity
        from mizzen.kube.status import field_manager

        source = self.kube_source
        if not status_enabled() or source is None:
            return
        tracker = self.distribution = DistributionTracker(self.status)
        current = self.pusher.current().configs
        for node_id in list(self.pusher.proxies):   # connected before this: on the latest push
            tracker.connected(node_id, current)
        me = holder_identity()
        # every replica reports its proxies (a ConfigMap in the elections' namespace); the leader sums them
        beat = heartbeat()
        reports = ReportIndex(work.namespace, me, stale_s=4 * beat)
        writer = self.distribution_writer = DistributionStatusWriter(
            api, source.statuses, source.generations, source.rejected, self.store.snapshot, tracker.progress,
            field_manager(me), update_interval(), status_qps(), reports=reports)
        reporter = self.distribution_reporter = DistributionReporter(
            api, work.namespace, me, self.store.snapshot, source.generations, source.rejected,
            tracker.progress, tracker.connected_count, update_interval(), beat)

        def changed() -> None:
            writer.mark()
            reporter.mark()

        tracker.on_progress = changed
        self.status.on_ack = tracker.check
        analysis = source.on_status

        def status_read() -> None:
            if analysis is not None:
                analysis()
            writer.mark()

        source.on_status = status_read
        self._distribution_unsubscribe = self.store.add_listener(
            lambda results: changed() if any(r.action != UNCHANGED for r in results) else None)
        work.add(STATUS_CONTROLLER, "distribution status", writer.run)
        self._reporter_task = asyncio.create_task(reporter.run(), name="distribution report")

    def _config_namespace(self) -> str:
        """Where the mesh config and injector ConfigMaps live and whose ``topology.istio.io/network`` label is
        the mesh's default network: the control plane's own namespace (``$POD_NAMESPACE``, as istiod reads
        them in its namespace), else the mesh's root namespace."""
        from mizzen.kube.ha import system_namespace

        return system_namespace(self.options.mesh.root_namespace)

    def _pod_admin_path(self, namespace: str, pod: str) -> str | None:
        """``/apis/pods``' ``admin`` of a pod: its debug channel's path while it is connected here, or while
        another replica may hold it (a pod with an ``istio-proxy`` container, with peers to ask)."""
        hub = self.proxy_debug
        if hub is None:
            return None
        if hub.connected(namespace, pod):
            return admin_path(namespace, pod)
        found = self.kube_registry.pods.items.get((namespace, pod)) if self.kube_registry else None
        containers = ((found or {}).get("spec") or {}).get("containers") or ()
        if any(c.get("name") == "istio-proxy" for c in containers) and hub.peers:
            return admin_path(namespace, pod)
        return None

    def _kube_pods(self) -> list[dict[str, Any]]:
        return list(self.kube_registry.pods.items.values()) if self.kube_registry is not None else []

    def _kube_endpoints(self, services: frozenset[str], reasons: list[str],
                        workloads: list[WorkloadKey]) -> None:
        """EndpointSlices (or the Pods, Nodes behind them) changed: an EDS-only push of those services."""
        self.metrics.inbound_updates.labels(type="eds").inc(len(reasons))
        self._request(PushRequest.endpoint_change(services, workloads, reasons, time.monotonic()))

    def _kube_mesh(self, text: str | None) -> None:
        """The mesh config ConfigMap changed: the command line's MeshConfig with its fields, a full push; an
        unusable one is logged and the current mesh config kept (as istiod does)."""
        from mizzen.kube.meshconfig import MeshConfigError, discovery_selectors, parse_mesh_config

        base = self.options.mesh
        self._mesh_text = text   # the injector reads defaultConfig from it
        try:
            mesh, ignored = parse_mesh_config(text, base) if text is not None else (base, [])
            selectors = discovery_selectors(text) if text is not None else ()
        except MeshConfigError as e:
            self.mesh_config_problem = f"mesh config ConfigMap {self._config_namespace()}/istio: {e}"
            log.warning("%s; keeping the current mesh config", self.mesh_config_problem)
            return
        self.mesh_config_problem = None
        if self.discovery is not None:   # the sources add/remove what it (de)selects: their pushes follow
            self.discovery.set_selectors(selectors)
        if ignored:
            log.info("mesh config: fields Mizzen does not honour are ignored: %s", ", ".join(ignored))
        if mesh != self.pusher.mesh:
            self.pusher.mesh = mesh
            log.info("mesh config changed (ConfigMap %s/istio %s)", self._config_namespace(),
                     "updated" if text is not None else "removed")
            self.request_push(["mesh config changed"])

    async def stop(self) -> None:
        self.started = False
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        # the distribution report deleted, leases released
        for task in (self._reporter_task, self._leader_task, self._kube_task, self._kube_registry_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._kube_task = self._kube_registry_task = self._leader_task = self._reporter_task = None
        if self._status_unsubscribe is not None:
            self._status_unsubscribe()
            self._status_unsubscribe = None
        if self._distribution_unsubscribe is not None:
            self._distribution_unsubscribe()
            self._distribution_unsubscribe = None
        if self.webhooks is not None:
            await self.webhooks.stop()
            self.webhooks = None
        if self.proxy_debug is not None and self.proxy_debug.peers is not None:
            await self.proxy_debug.peers.close()
        if self._kube_api is not None:
            await self._kube_api.close()
            self._kube_api = None
        if self._debouncer is not None:
            debouncer, self._debouncer = self._debouncer, None
            # bounded, so a stuck push can never hang shutdown
            try:
                await asyncio.wait_for(debouncer.close(), 1.0)
            except TimeoutError:
                log.warning("debouncer did not stop within 1s; cancelled again")
        self.events.close()
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
            if self.options.api_socket is not None:
                with contextlib.suppress(OSError):
                    self.options.api_socket.unlink()
        if self._grpc is not None:
            await self.ads.shutdown(self._grpc, 0.5)   # streams end cleanly; proxies reconnect later
            self._grpc = None
        if self._telemetry_held:
            # only now that no stream is served: a proxy reconnecting while we stop (it lands here until the
            # gRPC server is down) must get the listeners it has, else Envoy updates them in place and closes
            # the old chains' connections after its drain time (requests in flight on them fail)
            self._telemetry_held = False
            telemetry.release()
        await asyncio.to_thread(self.store.wait_written)
        await asyncio.to_thread(self.api.close)
        if self.identity is not None:
            self.identity.close()
        if self._ca_secret is not None:
            self._ca_secret.close()
            self._ca_secret = None

    async def serve_forever(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (the ``python -m mizzen.controlplane`` loop)."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    # --- changes and pushes ---------------------------------------------------------------------------------
    def _on_config_change(self, results: list[ApplyResult]) -> None:
        changed = [r for r in results if r.action != UNCHANGED]
        if not changed:
            return
        self.metrics.inbound_updates.labels(type="config").inc(len(changed))
        # counted per (kind, event): a 1,000-object apply is a few label lookups, not 1,000
        for (kind, action), n in Counter((r.kind, r.action) for r in changed).items():
            event = CONFIG_EVENTS.get(action, action)
            self.metrics.config_events.labels(type=kind, event=event).inc(n)
            if kind == "Service":
                self.metrics.registry_events.labels(type="Services", event=event).inc(n)
        if any(kinds.feeds_registry(r.kind) for r in changed):
            self.registry.set_configs(self.store.snapshot())
        self._request(PushRequest.config_change(
            (ConfigKey(r.kind, r.namespace, r.name) for r in changed),
            (f"config {r.kind}/{r.namespace}/{r.name} {r.action}" for r in changed), time.monotonic()))

    def request_push(self, reasons: Iterable[str] = ("manual",)) -> None:
        """Schedule a debounced full push of everything (no-op before start)."""
        self._request(PushRequest.everything(list(reasons), time.monotonic()))

    def _request(self, request: PushRequest) -> None:
        if self._debouncer is None:
            return
        self.pusher.stats.pending = True
        self.metrics.push_triggers.labels(type="config" if request.full else "endpoint").inc()
        self._debouncer.trigger(request)

    async def _push(self, request: PushRequest) -> None:
        self.pusher.stats.pending = False
        self._distributed(await self.pusher.push(request))

    async def push_now(self, reason: str = "manual") -> None:
        """Push immediately (bypassing the debounce), and wait for it."""
        self._distributed(await self.pusher.push(PushRequest.everything([reason], time.monotonic())))

    def _distributed(self, push: PushContext) -> None:
        """A push is in the cache: the distribution tracker (PILOT_ENABLE_STATUS) learns which config the
        proxies it covered are on (not those whose generation failed: they keep their last snapshot)."""
        if self.distribution is not None:
            errors = self.pusher.errors
            self.distribution.pushed(push.configs, [n for n in self.pusher.proxies if n not in errors])

    async def flush(self) -> None:
        """Wait until every change made so far has been pushed into the cache."""
        if self._debouncer is not None:
            await self._debouncer.flush()

    async def wait_synced(self, node_ids: Iterable[str] | None = None, timeout: float = 5.0) -> None:
        """Flush pending pushes, then wait until the proxies (default: all connected) ACKed their snapshot."""
        await asyncio.wait_for(self.flush(), timeout)
        nodes = list(node_ids) if node_ids is not None else sorted(self.pusher.proxies)
        await self.status.wait_synced(nodes, timeout)

    # --- convenience for embedders (runner, tests) ----------------------------------------------------------
    def apply(self, configs: Iterable[Config], *, dry_run: bool = False) -> list[ApplyResult]:
        return self.store.apply(configs, dry_run=dry_run)

    def _endpoint_request(self, before: RegistrySnapshot, request: PushRequest) -> PushRequest:
        """An endpoint change, plus a config change of the services whose endpoints' identities changed
        (their clusters' SANs, core.mtls.identity_changes)."""
        keys = identity_changes(before, self.registry.snapshot(), request.services)
        if not keys:
            return request
        reasons = [f"service accounts of {k.kind} {k.namespace}/{k.name} changed" for k in keys]
        return request.merge(PushRequest.config_change(keys, reasons, request.start))

    def register_workload(self, workload: Workload) -> None:
        if self._state is not None:
            self._state.write_workload(workload)
        known = any((w.namespace, w.name) == (workload.namespace, workload.name)
                    for w in self.registry.workloads())
        before = self.registry.snapshot()
        services = self.registry.register_workload(workload)
        self.metrics.inbound_updates.labels(type="eds").inc()
        self.metrics.registry_events.labels(type="Pods", event="update" if known else "add").inc()
        self._request(self._endpoint_request(before, PushRequest.endpoint_change(
            services, [WorkloadKey(workload.namespace, workload.name, workload.address)],
            [f"workload {workload.namespace}/{workload.name} registered"], time.monotonic())))

    def sync_workloads(self, workloads: Iterable[Workload]) -> tuple[int, int]:
        """Make ``workloads`` the complete set of registered workloads (the runner's reconcile after a
        restart of either side) and open the xDS gate; returns (registered or changed, removed)."""
        wanted = {(w.namespace, w.name): w for w in workloads}
        current = {(w.namespace, w.name): w for w in self.registry.workloads()}
        removed = [k for k in current if k not in wanted]
        changed = [w for k, w in wanted.items() if current.get(k) != w]
        before = self.registry.snapshot()
        services: set[str] = set()
        keys: list[WorkloadKey] = []
        for ns, name in removed:
            self.metrics.registry_events.labels(type="Pods", event="delete").inc()
            services |= self.registry.remove_workload(ns, name) or frozenset()
            keys.append(WorkloadKey(ns, name, current[(ns, name)].address))
            if self._state is not None:
                self._state.remove_workload(ns, name)
        for w in changed:
            self.metrics.registry_events.labels(
                type="Pods", event="update" if (w.namespace, w.name) in current else "add").inc()
            if self._state is not None:
                self._state.write_workload(w)
            services |= self.registry.register_workload(w)
            keys.append(WorkloadKey(w.namespace, w.name, w.address))
        if removed or changed:
            self.metrics.inbound_updates.labels(type="eds").inc(len(removed) + len(changed))
            self._request(self._endpoint_request(before, PushRequest.endpoint_change(
                services, keys, [f"workloads synced: {len(changed)} registered, {len(removed)} removed"],
                time.monotonic())))
        if not self.workloads_synced.is_set():
            log.info("workloads synced (%d): serving xDS", len(wanted))
            self.workloads_synced.set()
        return len(changed), len(removed)

    def _workload_sync_timed_out(self) -> None:
        self._sync_timer = None
        if not self.workloads_synced.is_set():
            log.warning("no workload sync within %.1fs: serving xDS from the %d restored workloads",
                        self.options.await_workload_sync_s or 0.0, len(self.registry.workloads()))
            self.workloads_synced.set()

    def remove_workload(self, namespace: str, name: str) -> bool:
        old = next((w for w in self.registry.workloads() if (w.namespace, w.name) == (namespace, name)), None)
        before = self.registry.snapshot()
        services = self.registry.remove_workload(namespace, name)
        if self._state is not None:
            self._state.remove_workload(namespace, name)
        if services is None:
            return False
        self.metrics.registry_events.labels(type="Pods", event="delete").inc()
        self.metrics.inbound_updates.labels(type="eds").inc()
        self._request(self._endpoint_request(before, PushRequest.endpoint_change(
            services, [WorkloadKey(namespace, name, old.address if old is not None else "")],
            [f"workload {namespace}/{name} removed"], time.monotonic())))
        return True

    # --- xDS callbacks --------------------------------------------------------------------------------------
    async def _on_connect(self, node_id: str, metadata: dict[str, Any]) -> None:
        if not self.workloads_synced.is_set():
            await self.workloads_synced.wait()     # never generate from a registry not reconciled yet
        await self.admission.acquire()   # a reconnect storm is admitted at a bounded rate
        self.pusher.connect(node_id, metadata)
        if self.distribution is not None:
            self.distribution.connected(node_id, self.pusher.current().configs)

    async def _on_disconnect(self, node_id: str) -> None:
        if self.status.proxy(node_id) is not None:
            return   # a newer stream of the same node is live
        self.pusher.disconnect(node_id)
        self.cache.clear(node_id)
        if self.distribution is not None:
            self.distribution.disconnected(node_id)


async def _serve_socket(runner: web.AppRunner, path: Path) -> None:
    """The API also on the Unix socket ``path``, created 0600 (umask) so no other user ever connects."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()                  # an earlier run's socket (the state dir's lock holder is us)
    old = os.umask(0o177)
    try:
        await web.UnixSite(runner, str(path)).start()
    finally:
        os.umask(old)
    os.chmod(path, 0o600)


def _bound_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    raise RuntimeError("HTTP server has no bound address")
