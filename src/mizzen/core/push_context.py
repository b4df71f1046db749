"""PushContext: one immutable view of config + registry + mesh, indexed for the generators.

Built once per push (debounced), shared by every proxy's generation. Lookups follow Istio's rules: short hosts
resolve against the object's namespace, DestinationRules are searched in the proxy's namespace, then the
service's, then the root namespace, and same-host VirtualServices are taken oldest first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from mizzen.config.labels import labels_match
from mizzen.config.model import Config, ConfigSnapshot
from mizzen.core.hosts import host_matches, is_wildcard, resolve_short_name
from mizzen.core.mesh import MeshConfig
from mizzen.core.proxy import Proxy
from mizzen.registry.model import RegistrySnapshot, Resolution, Service, Workload

T = TypeVar("T")

MESH_GATEWAY = "mesh"


def exported_to(export_to: Any, owner_ns: str, viewer_ns: str) -> bool:
    """Istio exportTo: empty or '*' = everywhere, '.' = same namespace, otherwise a namespace list."""
    if not export_to:
        return True
    return any(e in ("*", viewer_ns) or (e == "." and owner_ns == viewer_ns) for e in export_to)


def vs_visibility(export_to: Any, owner_ns: str, viewer_ns: str) -> int | None:
    """How a VirtualService is visible from ``viewer_ns`` (Istio's virtualServiceIndex): 0 private (``.`` or
    its own namespace, viewed from there), 1 exported to the viewer by name, 2 public (``*`` or no exportTo);
    None when not visible (``~``, or other namespaces only)."""
    if not export_to:
        return 2
    values = {str(e) for e in export_to}
    if "*" in values:
        return 2
    if "~" in values:
        return None
    if viewer_ns == owner_ns and ("." in values or owner_ns in values):
        return 0
    if viewer_ns in values:
        return 1
    return None


def merge_destination_rules(drs: Sequence[Config]) -> Config:
    """Several DestinationRules for the same host in one namespace act as one (Istio's mergeDestinationRule):
    the oldest is the base; later ones add the subsets it lacks (by name) and its top-level trafficPolicy
    when it has none. The result keeps the oldest one's name, namespace and exportTo."""
    ordered = sorted(drs, key=lambda c: (c.created, c.name))
    base = ordered[0]
    if len(ordered) == 1:
        return base
    spec = dict(base.spec)
    subsets = list(spec.get("subsets") or ())
    names = {str(sub.get("name")) for sub in subsets}
    for dr in ordered[1:]:
        for sub in dr.spec.get("subsets") or ():
            if str(sub.get("name")) not in names:
                names.add(str(sub.get("name")))
                subsets.append(sub)
        if not spec.get("trafficPolicy") and dr.spec.get("trafficPolicy"):
            spec["trafficPolicy"] = dr.spec["trafficPolicy"]
    spec["subsets"] = subsets
    return dataclasses.replace(base, spec=spec)


@dataclass(frozen=True)
class ResolvedVirtualService:
    """A VirtualService with hosts and gateways resolved to FQDNs / ``namespace/name``."""

    config: Config
    hosts: tuple[str, ...]
    gateways: tuple[str, ...]          # "ns/name" or "mesh"

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.config.spec


@dataclass(frozen=True)
class PushContext:
    configs: ConfigSnapshot
    registry: RegistrySnapshot
    mesh: MeshConfig
    virtual_services: tuple[ResolvedVirtualService, ...] = ()
    services_by_host: Mapping[str, Service] = field(default_factory=dict)
    # DestinationRules without workloadSelector, indexed once per push (snapshot order kept):
    # (namespace, resolved host) -> DRs for a non-wildcard host; namespace -> (host, DR) for wildcard hosts
    drs_by_host: Mapping[tuple[str, str], tuple[Config, ...]] = field(default_factory=dict)
    wildcard_drs: Mapping[str, tuple[tuple[str, Config], ...]] = field(default_factory=dict)
    # Push-scoped memo of resources that many proxies share (outbound clusters, load assignments, sidecar
    # route configs), keyed by exactly the proxy properties they depend on. Proxies alike (same namespace,
    # labels, locality...) then get the *same* message objects: generated once, hashed and serialized once
    # by the xDS cache, stored once. Messages in it must never be mutated after they are built.
    memo: dict[Hashable, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def uses_field(self, kind: str, name: str) -> bool:
        """Whether any object of ``kind`` mentions the field ``name`` anywhere in its spec (the snapshot's
        index, :meth:`ConfigSnapshot.spec_fields`); lets memo keys leave out proxy properties that no config
        can make matter (e.g. labels when no VirtualService has ``sourceLabels``)."""
        return self.memoized(("uses", kind, name), lambda: name in self.configs.spec_fields(kind))

    def memoized(self, key: Hashable, build: Callable[[], T]) -> T:
        """``build()`` once per push for ``key``; later calls return the same object."""
        try:
            return cast(T, self.memo[key])
        except KeyError:
            value = self.memo[key] = build()
            return value

    @property
    def has_inline_endpoints(self) -> bool:
        """Whether any service is resolved by DNS (its clusters carry their endpoints inline)."""
        return self.memoized(("uses", "Service", "resolution"), lambda: any(
            s.resolution is not Resolution.STATIC for s in self.registry.services))

    @property
    def version(self) -> str:
        return f"{self.configs.version}-{self.registry.version}"

    @staticmethod
    def build(configs: ConfigSnapshot, registry: RegistrySnapshot, mesh: MeshConfig | None = None,
              memo: dict[Hashable, Any] | None = None, previous: PushContext | None = None) -> PushContext:
        """Index config + registry for one push. ``memo``: entries carried over from the previous push that
        nothing changed since could have made stale (see ``core.generate.carry_memo``). ``previous``: the
        last push's context, whose config indexes are reused when the config is the same."""
        mesh = mesh or MeshConfig()
        if previous is not None and previous.configs is configs and previous.mesh == mesh:
            return dataclasses.replace(previous, registry=registry,
                                       services_by_host={s.hostname: s for s in registry.services},
                                       memo=dict(memo) if memo else {})
        vss = []
        ordered = sorted(configs.list("VirtualService"), key=lambda c: (c.created, c.namespace, c.name))
        for c in ordered:
            ns = c.namespace
            hosts = tuple(resolve_short_name(h, ns, mesh.domain_suffix) for h in c.spec.get("hosts", ()))
            gws = tuple(resolve_gateway_ref(g, ns) for g in (c.spec.get("gateways") or (MESH_GATEWAY,)))
            vss.append(ResolvedVirtualService(c, hosts, gws))
        services = {s.hostname: s for s in registry.services}
        exact: dict[tuple[str, str], list[Config]] = {}
        wild: dict[str, list[tuple[str, Config]]] = {}
        for dr in configs.list("DestinationRule"):
            if dr.spec.get("workloadSelector") is not None:
                continue  # workload-scoped DRs apply to selected proxies only (not yet honoured)
            h = resolve_short_name(str(dr.spec.get("host", "")), dr.namespace, mesh.domain_suffix)
            if is_wildcard(h):
                wild.setdefault(dr.namespace, []).append((h, dr))
            else:
                exact.setdefault((dr.namespace, h), []).append(dr)
        return PushContext(configs, registry, mesh, tuple(vss), services,
                           {k: (merge_destination_rules(v),) for k, v in exact.items()},
                           {ns: tuple(v) for ns, v in wild.items()}, dict(memo) if memo else {})

    # --- services -------------------------------------------------------------------------------------------
    def service(self, hostname: str) -> Service | None:
        return self.services_by_host.get(hostname)

    def services_in(self, namespace: str) -> tuple[Service, ...]:
        """The services of one namespace (registry order), indexed once per push."""
        index = self.memoized(("index", "services"), lambda: _group(self.registry.services))
        return index.get(namespace, ())

    def workloads_in(self, namespace: str) -> tuple[Workload, ...]:
        """The workloads of one namespace (registry order), indexed once per push."""
        index = self.memoized(("index", "workloads"), lambda: _group(self.registry.workloads))
        return index.get(namespace, ())

    def services_visible_to(self, proxy: Proxy) -> list[Service]:
        return [s for s in self.registry.services if exported_to(s.export_to, s.namespace, proxy.namespace)]

    def resolve_host(self, host: str, namespace: str) -> str:
        return resolve_short_name(host, namespace, self.mesh.domain_suffix)

    # --- VirtualServices ------------------------------------------------------------------------------------
    def virtual_services_for(self, proxy: Proxy, gateway: str = MESH_GATEWAY) -> list[ResolvedVirtualService]:
        """VirtualServices bound to ``gateway`` ("mesh" for sidecars) and exported to the proxy's namespace
        (for a gateway too: a VS exported to ``.`` only binds gateway proxies of its own namespace), in
        Istio's order (SelectVirtualServices, VirtualServicesForGateway): private to the proxy's namespace
        first, then those exported to it by name, then public ones; oldest first within each group. The
        first VS for a host wins, so a consumer-side VS in the client's namespace overrides the owner's."""
        ranked: list[tuple[int, int, ResolvedVirtualService]] = []
        for i, vs in enumerate(self.virtual_services):
            if gateway not in vs.gateways:
                continue
            rank = vs_visibility(vs.spec.get("exportTo"), vs.config.namespace, proxy.namespace)
            if rank is not None:
                ranked.append((rank, i, vs))
        return [vs for _, _, vs in sorted(ranked, key=lambda t: (t[0], t[1]))]

    # --- DestinationRules -----------------------------------------------------------------------------------
    def destination_rule(self, proxy_namespace: str, hostname: str) -> Config | None:
        """The DestinationRule that applies to ``hostname`` for a proxy in ``proxy_namespace``."""
        svc = self.service(hostname)
        search = [proxy_namespace]
        if svc is not None and svc.namespace not in search:
            search.append(svc.namespace)
        if self.mesh.root_namespace not in search:
            search.append(self.mesh.root_namespace)
        for ns in search:
            # exact beats wildcard (several exact ones in one namespace are merged, see build)
            for dr in reversed(self.drs_by_host.get((ns, hostname), ())):
                if exported_to(dr.spec.get("exportTo"), dr.namespace, proxy_namespace):
                    return dr
            best: Config | None = None
            best_host = ""
            for h, dr in self.wildcard_drs.get(ns, ()):
                if not host_matches(h, hostname):
                    continue
                if not exported_to(dr.spec.get("exportTo"), dr.namespace, proxy_namespace):
                    continue
                # longer wildcard beats shorter (the first of equal length wins)
                if best is None or len(h) > len(best_host):
                    best, best_host = dr, h
            if best is not None:
                return best
        return None

    # --- Gateways and Sidecars ------------------------------------------------------------------------------
    def gateways_for(self, proxy: Proxy) -> list[Config]:
        """Gateways whose selector matches the proxy's labels (all namespaces, like Istio's default)."""
        out = []
        for gw in self.configs.list("Gateway"):
            selector = gw.spec.get("selector") or {}
            if labels_match(selector, proxy.labels):
                out.append(gw)
        return out

    def sidecar_for(self, proxy: Proxy) -> Config | None:
        """The Sidecar resource for a proxy: one with a matching workloadSelector, else the namespace default,
        else the root namespace's default. Looked up once per proxy per push (a push asks ~5 times per proxy:
        scope keys before and after, egress, memo keys); a proxy that reconnected is another object."""
        key = ("sidecar_for", proxy.id)
        hit = self.memo.get(key)
        if hit is not None and hit[0] is proxy:
            return cast("Config | None", hit[1])
        found = self._sidecar_for(proxy)
        self.memo[key] = (proxy, found)
        return found

    def _sidecar_for(self, proxy: Proxy) -> Config | None:
        default = None
        for sc in self.configs.list("Sidecar", proxy.namespace):
            sel = (sc.spec.get("workloadSelector") or {}).get("labels")
            if sel:
                if labels_match(sel, proxy.labels):
                    return sc
            elif default is None:
                default = sc
        if default is not None:
            return default
        for sc in self.configs.list("Sidecar", self.mesh.root_namespace):
            if not (sc.spec.get("workloadSelector") or {}).get("labels"):
                return sc
        return None


_N = TypeVar("_N", Service, Workload)


def _group(items: Sequence[_N]) -> dict[str, tuple[_N, ...]]:
    out: dict[str, list[_N]] = {}
    for item in items:
        out.setdefault(item.namespace, []).append(item)
    return {ns: tuple(v) for ns, v in out.items()}


def resolve_gateway_ref(ref: str, namespace: str) -> str:
    """``bookinfo-gateway`` in ns ``bookinfo`` -> ``bookinfo/bookinfo-gateway``; ``mesh`` stays ``mesh``."""
    if ref == MESH_GATEWAY:
        return ref
    if "/" in ref:
        return ref
    # Istio also accepts "name.namespace.svc.cluster.local"-style refs: namespace is the second label
    if "." in ref:
        name, ns = ref.split(".")[:2]
        return f"{ns}/{name}"
    return f"{namespace}/{ref}"
