"""The mutable service registry: services from config (Kubernetes Service, ServiceEntry), workloads from
WorkloadEntries and from a runner (``register_workload``), and the immutable :class:`RegistrySnapshot` the
translation core reads. Snapshots are cached until something changes; their version is a content hash, so
equal content always gives the same version. Conversion rules live in :mod:`mizzen.registry.convert`.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import threading
from collections.abc import Iterable, Mapping

from mizzen.config.labels import selects
from mizzen.config.model import ConfigSnapshot
from mizzen.registry.convert import (
    UNIX_PREFIX,
    endpoint_of,
    endpoints_for_service,
    endpoints_from_slices,
    entry_target_port,
    inline_workloads,
    kube_target_port,
    label_selectable,
    service_from_kube,
    services_from_service_entry,
    workload_from_entry,
)
from mizzen.registry.model import Endpoint, RegistrySnapshot, Service, ServicePort, SliceEndpoint, Workload

__all__ = ["Registry", "SliceKey", "build_snapshot", "with_service_endpoints", "with_workload"]

SliceKey = tuple[str, str]   # (namespace, Kubernetes Service name)
Slices = Mapping[SliceKey, tuple[SliceEndpoint, ...]]


def _digest(item: object) -> int:
    body = json.dumps(dataclasses.asdict(item), sort_keys=True, separators=(",", ":"),  # type: ignore[call-overload]
                      default=str)
    return int.from_bytes(hashlib.blake2b(body.encode(), digest_size=8).digest(), "big")


def _endpoints_digest(key: tuple[str, int], eps: Iterable[Endpoint]) -> int:
    h = hashlib.blake2b(f"{key[0]}:{key[1]}".encode(), digest_size=8)
    for e in eps:
        h.update(_digest(e).to_bytes(8, "big"))
    return int.from_bytes(h.digest(), "big")


def _version(total: int) -> str:
    return f"{total:016x}"[:12]


def _content_sum(services: Iterable[Service], endpoints: Mapping[tuple[str, int], tuple[Endpoint, ...]],
                 workloads: Iterable[Workload]) -> int:
    """Order-independent content hash (a sum of per-item hashes mod 2**64), so one workload's change
    updates it without hashing everything again."""
    total = sum(map(_digest, services)) + sum(map(_digest, workloads))
    total += sum(_endpoints_digest(k, v) for k, v in endpoints.items())
    return total % _MOD


_MOD = 1 << 64


def _winners(services: Iterable[Service]) -> list[Service]:
    """Istio's rule for one hostname defined more than once in a namespace (PushContext
    initServiceRegistry): a Kubernetes Service beats a ServiceEntry (no "squatting" on a Service's name);
    otherwise the oldest wins. The losers are left out, with their endpoints."""
    best: dict[tuple[str, str], Service] = {}
    for svc in services:
        key = (svc.hostname, svc.namespace)
        cur = best.get(key)
        if cur is None or _precedes(svc, cur):
            best[key] = svc
    return list(best.values())


def _precedes(a: Service, b: Service) -> bool:
    a_kube, b_kube = a.origin == "Service", b.origin == "Service"
    if a_kube != b_kube:
        return a_kube
    return (a.created, a.name) < (b.created, b.name)


def _service_endpoints(svc: Service, workloads: Iterable[Workload], slices: Slices,
                       inline: Iterable[Workload] = (), external_name: str = "") -> dict[int, list[Endpoint]]:
    """Every endpoint of one service: selected workloads (registered, WorkloadEntries), a ServiceEntry's
    inline endpoints, and for a Kubernetes Service its EndpointSlices (an address:port in both: once)."""
    out = endpoints_for_service(svc, workloads, inline, external_name)
    if svc.origin != "Service":
        return out
    sliced = slices.get((svc.namespace, svc.name))
    if sliced:
        for port, eps in endpoints_from_slices(svc, sliced).items():
            have = {(e.address, e.port) for e in out.get(port, ())}
            out.setdefault(port, []).extend(e for e in eps if (e.address, e.port) not in have)
    return out


def build_snapshot(configs: ConfigSnapshot, registered: Iterable[Workload],
                   domain_suffix: str = "cluster.local", slices: Slices | None = None) -> RegistrySnapshot:
    """Pure: config objects + registered workloads + Kubernetes EndpointSlice endpoints (per Service) ->
    a RegistrySnapshot (the aggregate of the Kubernetes and ServiceEntry registries)."""
    slices = slices or {}
    workloads = [workload_from_entry(c) for c in configs.list("WorkloadEntry")]
    workloads.extend(registered)
    workloads.sort(key=lambda w: (w.namespace, w.name, w.address))

    candidates: list[tuple[Service, list[Workload], str]] = []
    for c in configs.list("Service"):
        svc = service_from_kube(c, domain_suffix)
        external = str(c.spec.get("externalName") or "") if svc.mesh_external else ""
        candidates.append((svc, [], external))
    for c in configs.list("ServiceEntry"):
        inline = inline_workloads(c)
        candidates.extend((svc, inline, "") for svc in services_from_service_entry(c))
    kept = {id(s) for s in _winners(s for s, _, _ in candidates)}

    services: list[Service] = []
    endpoints: dict[tuple[str, int], list[Endpoint]] = {}
    for svc, inline, external in candidates:
        if id(svc) not in kept:
            continue
        services.append(svc)
        for port, eps in _service_endpoints(svc, workloads, slices, inline, external).items():
            endpoints.setdefault((svc.hostname, port), []).extend(eps)

    services.sort(key=lambda s: (s.hostname, s.namespace, s.origin, s.name))
    frozen = {key: _sorted(eps) for key, eps in sorted(endpoints.items())}
    total = _content_sum(services, frozen, workloads)
    return RegistrySnapshot(services=tuple(services), endpoints=frozen, workloads=tuple(workloads),
                            version=_version(total), content_sum=total)


def _sorted(eps: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    return tuple(sorted(eps, key=lambda e: (e.address, e.port, e.workload)))


def with_service_endpoints(snap: RegistrySnapshot, namespace: str, name: str, slices: Slices) -> tuple[
        RegistrySnapshot, frozenset[str]]:
    """``snap`` with the endpoints of the Kubernetes Service ``namespace/name`` recomputed (its EndpointSlices
    changed); also returns its hostname when its endpoints changed. Other services are untouched."""
    svc = next((s for s in snap.services
                if s.origin == "Service" and s.namespace == namespace and s.name == name), None)
    if svc is None:
        return snap, frozenset()
    fresh = _service_endpoints(svc, snap.workloads, slices)
    endpoints = dict(snap.endpoints)
    total = snap.content_sum
    changed = False
    for port in svc.ports:
        key = (svc.hostname, port.port)
        # the same host:port may also hold another service's endpoints (a ServiceEntry elsewhere): keep them
        others = [e for e in endpoints.get(key, ()) if e.namespace != svc.namespace]
        frozen = _sorted([*others, *fresh.get(port.port, ())])
        if frozen != endpoints.get(key, ()):
            total -= _endpoints_digest(key, endpoints.get(key, ()))
            total += _endpoints_digest(key, frozen)
            endpoints[key] = frozen
            changed = True
    if not changed:
        return snap, frozenset()
    total %= _MOD
    return (RegistrySnapshot(snap.services, endpoints, snap.workloads, _version(total), total),
            frozenset({svc.hostname}))


def _endpoint_for(svc: Service, port: ServicePort, w: Workload) -> Endpoint | None:
    target = entry_target_port(port, w) if svc.origin == "ServiceEntry" else kube_target_port(port, w)
    return None if target is None else endpoint_of(svc, port, w, target)


def with_workload(snap: RegistrySnapshot, old: Workload | None, new: Workload | None) -> tuple[
        RegistrySnapshot, frozenset[str]]:
    """``snap`` with one registered workload replaced, added (``old`` None) or removed (``new`` None),
    touching only the services that select it; also returns their hostnames (endpoints changed)."""
    ref = new if new is not None else old
    ns = ref.namespace if ref is not None else ""
    total = snap.content_sum
    endpoints = dict(snap.endpoints)
    changed: set[str] = set()
    for svc in snap.services:
        if not svc.selector or svc.namespace != ns:
            continue
        was = old is not None and selects(svc.selector, old.labels) and label_selectable(svc, old)
        now = new is not None and selects(svc.selector, new.labels) and not new.address.startswith(
            UNIX_PREFIX) and label_selectable(svc, new)
        if not (was or now):
            continue
        for port in svc.ports:
            key = (svc.hostname, port.port)
            eps = [e for e in endpoints.get(key, ()) if not (
                old is not None and e.workload == old.name and e.namespace == old.namespace
                and e.address == old.address)]
            if now and new is not None:
                e = _endpoint_for(svc, port, new)
                if e is not None:
                    eps.append(e)
            frozen = _sorted(eps)
            if frozen != endpoints.get(key, ()):
                total -= _endpoints_digest(key, endpoints.get(key, ()))
                total += _endpoints_digest(key, frozen)
                endpoints[key] = frozen
                changed.add(svc.hostname)
    gone = (old.namespace, old.name) if old is not None else None
    workloads = [w for w in snap.workloads if (w.namespace, w.name) != gone]
    if old is not None:
        total -= _digest(old)
    if new is not None:
        bisect.insort(workloads, new, key=lambda w: (w.namespace, w.name, w.address))
        total += _digest(new)
    total %= _MOD
    new_snap = RegistrySnapshot(snap.services, endpoints, tuple(workloads), _version(total), total)
    return new_snap, frozenset(changed)


class Registry:
    """Holds the current config and registered workloads; thread-safe; :meth:`snapshot` is cached."""

    def __init__(self, domain_suffix: str = "cluster.local") -> None:
        self._domain_suffix = domain_suffix
        self._lock = threading.Lock()
        self._configs = ConfigSnapshot()
        self._workloads: dict[tuple[str, str], Workload] = {}
        self._slices: dict[SliceKey, tuple[SliceEndpoint, ...]] = {}
        self._cached: RegistrySnapshot | None = None

    def set_configs(self, snapshot: ConfigSnapshot) -> None:
        """Replace the config the services and WorkloadEntries come from."""
        with self._lock:
            if snapshot.version == self._configs.version and snapshot.version != "empty":
                return   # same content (versions are content hashes): keep the cached snapshot
            self._configs = snapshot
            self._cached = None

    def register_workload(self, w: Workload) -> frozenset[str]:
        """Add or replace (by namespace and name) a running workload instance; returns the hostnames of the
        services whose endpoints changed (the snapshot is updated for those only)."""
        with self._lock:
            old = self._workloads.get((w.namespace, w.name))
            self._workloads[(w.namespace, w.name)] = w
            return self._changed(old, w)

    def remove_workload(self, namespace: str, name: str) -> frozenset[str] | None:
        """Remove a registered workload: None if there was none, else the hostnames of the services whose
        endpoints changed."""
        with self._lock:
            old = self._workloads.pop((namespace, name), None)
            if old is None:
                return None
            return self._changed(old, None)

    def _changed(self, old: Workload | None, new: Workload | None) -> frozenset[str]:
        if self._cached is None:
            self._cached = build_snapshot(self._configs, self._workloads.values(), self._domain_suffix,
                                          self._slices)
            ref = new or old
            assert ref is not None
            return frozenset(s.hostname for s in self._cached.services if s.selector and s.namespace ==
                             ref.namespace and any(selects(s.selector, w.labels)
                                                   for w in (old, new) if w is not None))
        self._cached, changed = with_workload(self._cached, old, new)
        return changed

    def set_service_endpoints(self, namespace: str, name: str,
                              endpoints: Iterable[SliceEndpoint]) -> frozenset[str]:
        """Replace the EndpointSlice endpoints of the Kubernetes Service ``namespace/name`` (the Kubernetes
        registry's input; an empty list removes them); returns the hostnames whose endpoints changed (the
        snapshot is updated for that service only)."""
        key = (namespace, name)
        unique = {(e.address, e.port_name, e.port, e.pod): e for e in endpoints}   # listed twice: once
        eps = tuple(unique[k] for k in sorted(unique))
        with self._lock:
            if self._slices.get(key, ()) == eps:
                return frozenset()
            if eps:
                self._slices[key] = eps
            else:
                self._slices.pop(key, None)
            if self._cached is None:
                return frozenset({f"{name}.{namespace}.svc.{self._domain_suffix}"})
            self._cached, changed = with_service_endpoints(self._cached, namespace, name, self._slices)
            return changed

    def service_endpoints(self) -> dict[SliceKey, tuple[SliceEndpoint, ...]]:
        """The EndpointSlice endpoints per Kubernetes Service (namespace, name)."""
        with self._lock:
            return dict(self._slices)

    def workloads(self) -> list[Workload]:
        """The registered workloads (not WorkloadEntries), sorted by namespace and name."""
        with self._lock:
            return [self._workloads[k] for k in sorted(self._workloads)]

    def snapshot(self) -> RegistrySnapshot:
        with self._lock:
            if self._cached is None:
                self._cached = build_snapshot(self._configs, self._workloads.values(), self._domain_suffix,
                                          self._slices)
            return self._cached
