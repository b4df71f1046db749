"""The mutable service registry: services from config (Kubernetes Service, ServiceEntry), workloads from
WorkloadEntries and from a runner (``register_workload``), and the immutable :class:`RegistrySnapshot` the
translation core reads. Snapshots are cached until something changes; their version is a content hash, so
equal content always gives the same version. Conversion rules live in :mod:`mizzen.registry.convert`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Iterable

from mizzen.config.model import ConfigSnapshot
from mizzen.registry.convert import (
    endpoints_for_service,
    inline_workloads,
    service_from_kube,
    services_from_service_entry,
    workload_from_entry,
)
from mizzen.registry.model import Endpoint, RegistrySnapshot, Service, Workload

__all__ = ["Registry", "build_snapshot"]


def _content_version(services: Iterable[Service], endpoints: dict[tuple[str, int], tuple[Endpoint, ...]],
                     workloads: Iterable[Workload]) -> str:
    body = json.dumps(
        {
            "services": [dataclasses.asdict(s) for s in services],
            "endpoints": [[h, p, [dataclasses.asdict(e) for e in eps]]
                          for (h, p), eps in sorted(endpoints.items())],
            "workloads": [dataclasses.asdict(w) for w in workloads],
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def build_snapshot(configs: ConfigSnapshot, registered: Iterable[Workload],
                   domain_suffix: str = "cluster.local") -> RegistrySnapshot:
    """Pure: config objects + runner-registered workloads -> a RegistrySnapshot."""
    workloads = [workload_from_entry(c) for c in configs.list("WorkloadEntry")]
    workloads.extend(registered)
    workloads.sort(key=lambda w: (w.namespace, w.name, w.address))

    services: list[Service] = []
    endpoints: dict[tuple[str, int], list[Endpoint]] = {}
    for c in configs.list("Service"):
        svc = service_from_kube(c, domain_suffix)
        services.append(svc)
        external = str(c.spec.get("externalName") or "") if svc.mesh_external else ""
        for port, eps in endpoints_for_service(svc, workloads, external_name=external).items():
            endpoints.setdefault((svc.hostname, port), []).extend(eps)
    for c in configs.list("ServiceEntry"):
        inline = inline_workloads(c)
        for svc in services_from_service_entry(c):
            services.append(svc)
            for port, eps in endpoints_for_service(svc, workloads, inline).items():
                endpoints.setdefault((svc.hostname, port), []).extend(eps)

    services.sort(key=lambda s: (s.hostname, s.namespace, s.origin, s.name))
    frozen = {key: tuple(sorted(eps, key=lambda e: (e.address, e.port, e.workload)))
              for key, eps in sorted(endpoints.items())}
    return RegistrySnapshot(
        services=tuple(services),
        endpoints=frozen,
        workloads=tuple(workloads),
        version=_content_version(services, frozen, workloads),
    )


class Registry:
    """Holds the current config and registered workloads; thread-safe; :meth:`snapshot` is cached."""

    def __init__(self, domain_suffix: str = "cluster.local") -> None:
        self._domain_suffix = domain_suffix
        self._lock = threading.Lock()
        self._configs = ConfigSnapshot()
        self._workloads: dict[tuple[str, str], Workload] = {}
        self._cached: RegistrySnapshot | None = None

    def set_configs(self, snapshot: ConfigSnapshot) -> None:
        """Replace the config the services and WorkloadEntries come from."""
        with self._lock:
            if snapshot.version == self._configs.version and snapshot.version != "empty":
                return   # same content (versions are content hashes): keep the cached snapshot
            self._configs = snapshot
            self._cached = None

    def register_workload(self, w: Workload) -> None:
        """Add or replace (by namespace and name) a running workload instance."""
        with self._lock:
            self._workloads[(w.namespace, w.name)] = w
            self._cached = None

    def remove_workload(self, namespace: str, name: str) -> bool:
        """Remove a registered workload; False if there was none."""
        with self._lock:
            if self._workloads.pop((namespace, name), None) is None:
                return False
            self._cached = None
            return True

    def workloads(self) -> list[Workload]:
        """The registered workloads (not WorkloadEntries), sorted by namespace and name."""
        with self._lock:
            return [self._workloads[k] for k in sorted(self._workloads)]

    def snapshot(self) -> RegistrySnapshot:
        with self._lock:
            if self._cached is None:
                self._cached = build_snapshot(self._configs, self._workloads.values(), self._domain_suffix)
            return self._cached
