"""What every analyzer reads: the config snapshot, a registry snapshot (or None when unknown), the mesh, and
indexes built once per run (a :class:`~mizzen.core.push_context.PushContext` for Istio's host and
DestinationRule lookups, the known gateway workloads). Also the offline stand-ins for pods: one
pseudo-workload per Deployment, so files alone can be checked against their own Deployments.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mizzen.config.labels import labels_match
from mizzen.config.model import Config, ConfigSnapshot
from mizzen.core.hosts import host_matches, resolve_short_name
from mizzen.core.mesh import MeshConfig
from mizzen.core.push_context import PushContext
from mizzen.core.sidecar_scope import virtual_service_destinations
from mizzen.registry.model import RegistrySnapshot, Service, Workload

__all__ = ["AnalysisContext", "destinations", "labels_match", "workloads_from_deployments"]


@dataclass(frozen=True)
class AnalysisContext:
    configs: ConfigSnapshot
    registry: RegistrySnapshot | None
    mesh: MeshConfig
    push: PushContext
    # the workloads (pods, gateway proxies) Gateways can select (None: not known, skip the checks that
    # need them, as for files analyzed alone)
    gateway_workloads: tuple[Workload, ...] | None

    @staticmethod
    def build(configs: ConfigSnapshot, registry: RegistrySnapshot | None, mesh: MeshConfig | None,
              gateway_workloads: Sequence[Workload] | None) -> AnalysisContext:
        mesh = mesh or MeshConfig()
        push = PushContext.build(configs, registry or RegistrySnapshot(), mesh)
        gws = tuple(gateway_workloads) if gateway_workloads else None
        return AnalysisContext(configs, registry, mesh, push, gws)

    def gateway_pods(self, gw: Config) -> list[Workload]:
        """The known workloads a Gateway's selector picks (any namespace, as Istio's analyzers); an empty
        selector picks none."""
        selector = gw.spec.get("selector") or {}
        if not selector:
            return []
        return [w for w in self.gateway_workloads or () if labels_match(selector, w.labels)]

    def resolve(self, host: str, namespace: str) -> str:
        return resolve_short_name(host, namespace, self.mesh.domain_suffix)

    def service_for(self, host: str) -> Service | None:
        """The registry service for a resolved host: exact, else a wildcard ServiceEntry host covering it."""
        if self.registry is None:
            return None
        svc = self.push.service(host)
        if svc is not None:
            return svc
        for s in self.registry.services:
            if s.hostname.startswith("*") and host_matches(s.hostname, host):
                return s
        return None

    def host_known(self, host: str) -> bool:
        """A destination or DestinationRule host is known if some service has it, covers it (wildcard
        ServiceEntry) or, for a wildcard host, is covered by it."""
        if self.service_for(host) is not None:
            return True
        if host.startswith("*") and self.registry is not None:
            return any(host_matches(host, s.hostname) for s in self.registry.services)
        return False


def destinations(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every (field path, destination) of a VirtualService: http/tcp/tls routes and http mirrors."""
    return virtual_service_destinations(spec)


def workloads_from_deployments(configs: ConfigSnapshot | Sequence[Config]) -> list[Workload]:
    """One stand-in workload per Deployment with replicas (its pod template's labels and named container
    ports), for analyzing files with no running pods."""
    deployments = configs.list("Deployment") if isinstance(configs, ConfigSnapshot) else \
        [c for c in configs if c.kind == "Deployment"]
    out: list[Workload] = []
    for d in deployments:
        replicas = d.spec.get("replicas", 1)
        if isinstance(replicas, int) and replicas <= 0:
            continue
        template = d.spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        ports: dict[str, int] = {}
        for c in (template.get("spec") or {}).get("containers") or ():
            for p in c.get("ports") or ():
                if p.get("name") and isinstance(p.get("containerPort"), int):
                    ports[str(p["name"])] = int(p["containerPort"])
        out.append(Workload(name=d.name, namespace=d.namespace, address="0.0.0.0",
                            labels={str(k): str(v) for k, v in labels.items()}, ports=ports,
                            service_account=str((template.get("spec") or {}).get("serviceAccountName")
                                                or "default")))
    return out
