"""Sidecars for local pods: the :class:`Sidecar` protocol the runner drives, what the runner tells a sidecar
factory about a pod (:class:`SidecarRequest`), and :class:`AgentSidecars`, the factory that runs
``mizzen.agent.Agent`` (one supervised Envoy) per pod with Istio-style node metadata.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from mizzen.agent.bootstrap import AGENT_ADMIN_PORT, ProxySpec
from mizzen.agent.envoy import Agent, AgentEvent, AgentOptions
from mizzen.core.proxy import ProxyType
from mizzen.runner.credentials import CredentialIssuer, with_identity
from mizzen.telemetry.prometheus import app_scrape

log = logging.getLogger(__name__)

HTTP_PROXY_PORT = 15080
PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"
ADMIN_PORT = AGENT_ADMIN_PORT      # the agent's admin proxy; Envoy's admin is a socket in the work dir


class Sidecar(Protocol):
    restarts: int

    @property
    def running(self) -> bool: ...

    async def start(self, ready_timeout: float | None = ...) -> None: ...

    async def wait_ready(self, timeout: float = ...) -> None: ...

    async def stop(self, timeout: float = ...) -> None: ...


@dataclass(frozen=True)
class SidecarRequest:
    pod_name: str
    namespace: str
    pod_ip: str
    app_host: str
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    workload: str = ""                     # the Deployment
    http_proxy_port: int = HTTP_PROXY_PORT
    annotations: Mapping[str, str] = field(default_factory=dict)   # the pod's (prometheus.io/*, proxy config)


SidecarFactory = Callable[[SidecarRequest], Sidecar]


def proxy_stats_matcher(annotations: Mapping[str, str]) -> Mapping[str, Any] | None:
    """``proxyStatsMatcher`` of the pod's ``proxy.istio.io/config`` annotation (ProxyConfig YAML), if any; an
    annotation that is not YAML is ignored with a warning, as the injector would reject it."""
    text = annotations.get(PROXY_CONFIG_ANNOTATION)
    if not text:
        return None
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError:
        log.warning("%s is not YAML; ignored", PROXY_CONFIG_ANNOTATION)
        return None
    m = cfg.get("proxyStatsMatcher") if isinstance(cfg, dict) else None
    return m if isinstance(m, dict) else None


class AgentSidecars:
    """Creates one :class:`Agent` per pod: node ``sidecar~<pod ip>~<pod>.<ns>~...``, the agent's admin proxy
    on ``<pod ip>:15004`` (when ``options.admin_token`` is set), ADS to ``xds_host:xds_port``; with
    ``credentials`` and ``ca_address`` (the control plane's TLS port) each pod gets its credential and its
    agent serves SDS and forwards xDS over TLS instead."""

    def __init__(
        self,
        xds_host: str = "127.0.0.1",
        xds_port: int = 15010,
        options: AgentOptions | None = None,
        work_root: Path | None = None,
        on_event: Callable[[AgentEvent], None] | None = None,
        *,
        credentials: CredentialIssuer | None = None,
        ca_address: str | None = None,
    ) -> None:
        if (credentials is None) != (ca_address is None):
            raise ValueError("credentials and ca_address go together")
        self.credentials, self.ca_address = credentials, ca_address
        self.xds_host, self.xds_port = xds_host, xds_port
        self.options = options or AgentOptions()
        self.work_root = work_root
        self.on_event = on_event

    def spec(self, req: SidecarRequest) -> ProxySpec:
        scrape = app_scrape(req.annotations)
        return ProxySpec(
            type=ProxyType.SIDECAR,
            ip=req.pod_ip,
            namespace=req.namespace,
            name=req.pod_name,
            admin_port=ADMIN_PORT,
            xds_host=self.xds_host,
            xds_port=self.xds_port,
            labels=dict(req.labels),
            service_account=req.service_account,
            app_host=req.app_host,
            http_proxy_port=req.http_proxy_port,
            app_metrics_port=scrape.port if scrape else None,
            app_metrics_path=scrape.path if scrape else "/metrics",
            proxy_stats_matcher=proxy_stats_matcher(req.annotations),
        )

    def __call__(self, req: SidecarRequest) -> Agent:
        opts = self.options
        if self.work_root is not None:
            opts = dataclasses.replace(opts, work_dir=self.work_root / req.namespace / req.pod_name)
        if self.credentials is not None and self.ca_address is not None:
            opts = with_identity(opts, self.credentials, self.ca_address, req.namespace, req.pod_name,
                                 req.service_account)
        return Agent(self.spec(req), opts, self.on_event)
