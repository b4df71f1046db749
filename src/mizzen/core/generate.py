"""Generators by xDS type: the :class:`Generator` protocol and the table of them keyed by type URL.

A generator knows its type URL, the config kinds it reads (declared per kind in ``config.kinds``), the proxy
properties its output depends on (:meth:`Generator.proxy_key`, from ``core.proxy_keys``) and how to build its
resources for one proxy from one PushContext. Some types name their resources after another type's output
(EDS after the EDS clusters of CDS, RDS after the route configs the listeners refer to): ``names_from``. The
push loop works from this table only, so SDS and other types plug in by registering here.

Memo keys are tuples whose first element is the generator's short name (``"CDS"`` per resource, ``"CDS*"``
for a proxy's whole output) and, for per-host resources, the service hostname second: :func:`carry_memo`
uses that to keep what a change cannot have touched. A key ending in :class:`Reads` is one proxy's output
(node id second) that names the kinds it was built from, so it outlives changes to other kinds that its
generator declares (LDS reads VirtualServices, but a local-mode sidecar's listeners do not).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import Message

from mizzen.config import kinds
from mizzen.core import clusters, endpoints, grpcgen, listeners, plugins, proxy_keys, routes
from mizzen.core import names as names_
from mizzen.core.proxy import Proxy
from mizzen.core.proxy_keys import Reads
from mizzen.core.push_context import PushContext
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SHORT, ResourceSet

__all__ = [
    "GENERATORS",
    "Generator",
    "Reads",
    "carry_memo",
    "generate",
    "register",
    "types_reading",
]

NamesFrom = tuple[str, Callable[[Mapping[str, Message]], list[str]]]


class Generator(Protocol):
    """Builds one xDS type's resources for one proxy."""

    @property
    def type_url(self) -> str: ...

    @property
    def short(self) -> str: ...

    @property
    def reads(self) -> frozenset[str]:
        """Config kinds whose objects shape the output."""
        ...

    @property
    def names_from(self) -> NamesFrom | None:
        """(type URL, names picker): the resources to build are named by another type's output."""
        ...

    def proxy_key(self, proxy: Proxy, push: PushContext) -> Hashable:
        """Everything about the proxy the output depends on: equal keys, equal output."""
        ...

    def generate(self, proxy: Proxy, push: PushContext, names: Sequence[str] | None) -> Mapping[str, Message]:
        ...


@functools.cache   # the kinds are declared once (config.kinds); asked per proxy per push
def _reads(short: str) -> frozenset[str]:
    return frozenset(k.kind for k in kinds.ALL_KINDS if short in k.read_by)


@dataclass(frozen=True)
class _Clusters:
    type_url: str = CLUSTER
    short: str = "CDS"
    names_from: NamesFrom | None = None

    @property
    def reads(self) -> frozenset[str]:
        return _reads(self.short)

    def proxy_key(self, proxy: Proxy, push: PushContext) -> Hashable:
        return proxy_keys.outbound_clusters_key(proxy, push)

    def generate(self, proxy: Proxy, push: PushContext, names: Sequence[str] | None) -> Mapping[str, Message]:
        # the outbound part is shared by every proxy with the same key (same objects, same order, so the
        # cache shares it too); the proxy's own clusters follow
        outbound, eds_names = clusters.outbound_cluster_map(proxy, push, self.proxy_key(proxy, push))
        out = ClusterMap(outbound)
        for c in clusters.local_clusters(proxy, push):
            if c.name not in out or c.name in _LOCAL_WINS:
                out[c.name] = c
        out.eds_names = eds_names
        return out


_LOCAL_WINS = frozenset({names_.BLACKHOLE_CLUSTER, names_.PASSTHROUGH_CLUSTER,
                         names_.INBOUND_PASSTHROUGH_CLUSTER})


class ClusterMap(dict[str, Message]):
    """CDS output that knows the names of its EDS clusters (computed once per shared outbound part)."""

    eds_names: tuple[str, ...] = ()


def _eds_names(cds: Mapping[str, Message]) -> list[str]:
    if isinstance(cds, ClusterMap):
        return list(cds.eds_names)   # inbound and fixed clusters are STATIC / ORIGINAL_DST: none of them
    return [name for name, c in cds.items() if clusters.uses_eds(c)]


@dataclass(frozen=True)
class _Endpoints:
    type_url: str = ENDPOINT
    short: str = "EDS"
    names_from: NamesFrom | None = (CLUSTER, _eds_names)

    @property
    def reads(self) -> frozenset[str]:
        return _reads(self.short)

    def proxy_key(self, proxy: Proxy, push: PushContext) -> Hashable:
        return proxy_keys.endpoint_inputs(proxy, push)

    def generate(self, proxy: Proxy, push: PushContext, names: Sequence[str] | None) -> Mapping[str, Message]:
        wanted = tuple(names or ())

        def build() -> dict[str, Message]:
            return {e.cluster_name: e for e in endpoints.build_endpoints(proxy, push, list(wanted))}
        return push.memoized(("EDS*", self.proxy_key(proxy, push), wanted), build)


class ListenerMap(dict[str, Message]):
    """LDS output that remembers the route config names its listeners refer to (computed once)."""

    route_names: tuple[str, ...] | None = None


def _route_names(lds: Mapping[str, Message]) -> list[str]:
    if isinstance(lds, ListenerMap):
        if lds.route_names is None:
            lds.route_names = tuple(listeners.route_config_names(list(lds.values())))
        return list(lds.route_names)
    return listeners.route_config_names(list(lds.values()))


@dataclass(frozen=True)
class _Listeners:
    type_url: str = LISTENER
    short: str = "LDS"
    names_from: NamesFrom | None = None

    @property
    def reads(self) -> frozenset[str]:
        return _reads(self.short)

    def proxy_key(self, proxy: Proxy, push: PushContext) -> Hashable:
        return proxy.id   # bound to the proxy's own addresses and workload

    def generate(self, proxy: Proxy, push: PushContext, names: Sequence[str] | None) -> Mapping[str, Message]:
        # memoized per proxy with the kinds it read (and the plugins that added to it): a change to anything
        # else (a VirtualService for a local-mode sidecar) reuses the same messages, which the cache then
        # recognises without packing them again; the stored proxy guards against a reconnect with new metadata
        key = ("LDS*", proxy.id, tuple(plugins.PLUGINS),
               Reads(proxy_keys.listener_reads(proxy, push, self.reads)))
        return proxy_keys.memoized_for(push, proxy, key, lambda: ListenerMap(
            (lis.name, lis) for lis in listeners.build_listeners(proxy, push)))


@dataclass(frozen=True)
class _Routes:
    type_url: str = ROUTE
    short: str = "RDS"
    names_from: NamesFrom | None = (LISTENER, _route_names)

    @property
    def reads(self) -> frozenset[str]:
        return _reads(self.short)

    def proxy_key(self, proxy: Proxy, push: PushContext) -> Hashable:
        return proxy_keys.route_inputs(proxy, push)

    def generate(self, proxy: Proxy, push: PushContext, names: Sequence[str] | None) -> Mapping[str, Message]:
        return {r.name: r for r in routes.build_routes(proxy, push, list(names or ()))}


GENERATORS: dict[str, Generator] = {}


def register(generator: Generator) -> None:
    """Add (or replace) the generator of its type URL."""
    GENERATORS[generator.type_url] = generator
    _ORDERS.clear()


_ORDERS: dict[frozenset[str], tuple[str, ...]] = {}   # wanted types -> _ordered(wanted), until a register


for _g in (_Clusters(), _Endpoints(), _Listeners(), _Routes()):
    register(_g)


def _ordered_cached(wanted: frozenset[str]) -> tuple[str, ...]:
    """:func:`_ordered`, computed once per set of types (it is asked for every proxy of every push)."""
    out = _ORDERS.get(wanted)
    if out is None:
        out = _ORDERS[wanted] = tuple(_ordered(wanted))
    return out


def _ordered(type_urls: Iterable[str]) -> list[str]:
    """Type URLs with every ``names_from`` source before its dependants (then push order)."""
    rank = {t: i for i, t in enumerate(PUSH_ORDER)}
    out: list[str] = []

    def visit(t: str) -> None:
        if t in out:
            return
        g = GENERATORS[t]
        if g.names_from is not None:
            visit(g.names_from[0])
        out.append(t)
    for t in sorted(type_urls, key=lambda t: (rank.get(t, len(rank)), t)):
        visit(t)
    return out


def generate(proxy: Proxy, push: PushContext, types: Collection[str] | None = None) -> ResourceSet:
    """The proxy's resources of ``types`` (default: every registered type). A type named after another's
    output has that one built too (memoized, so cheap), but only ``types`` are returned."""
    wanted = frozenset(GENERATORS) if types is None else frozenset(types)
    if grpcgen.is_proxyless(proxy):   # a proxyless gRPC client: api_listeners, its own clusters
        whole = grpcgen.generate_proxyless(proxy, push)
        return ResourceSet({t: v for t, v in whole.by_type.items() if t in wanted})
    built: dict[str, Mapping[str, Message]] = {}
    order = _ordered_cached(wanted)
    for t in order:
        g = GENERATORS[t]
        names = None
        if g.names_from is not None:
            source, pick = g.names_from
            names = pick(built[source])
        built[t] = g.generate(proxy, push, names)
    return ResourceSet({t: built[t] for t in order if t in wanted})


def types_reading(changed_kinds: Iterable[str]) -> set[str]:
    """Type URLs whose generators read any of ``changed_kinds``, plus the types named after their output."""
    changed = set(changed_kinds)
    out = {t for t, g in GENERATORS.items() if g.reads & changed}
    grew = True
    while grew:
        grew = False
        for t, g in GENERATORS.items():
            if t not in out and g.names_from is not None and g.names_from[0] in out:
                out.add(t)
                grew = True
    return out


_CARRIED = frozenset({*SHORT.values(), *(f"{s}*" for s in SHORT.values())})


def carry_memo(memo: Mapping[Hashable, Any], types: Collection[str], kinds_changed: Collection[str],
               hosts: Collection[str], nodes: Collection[str] | None = None) -> dict[Hashable, Any]:
    """The memo entries a push may keep from the previous one: everything except what generators of
    ``types`` built, ``uses`` scans of ``kinds_changed``, and per-host entries (and whole outputs) of CDS
    and EDS when ``hosts`` changed endpoints. Per-proxy entries keyed with :class:`Reads` stay unless one of
    their kinds changed, the registry changed, or (given ``nodes``, the connected ones) their node left."""
    drop = {SHORT[t] for t in types if t in SHORT}
    drop |= {f"{s}*" for s in drop}
    per_host = {"CDS", "EDS"} if hosts else set()
    if hosts:
        drop |= {"CDS*", "EDS*"}
    host_set = set(hosts)
    kind_set = set(kinds_changed)
    registry_changed = bool(hosts) or any(kinds.feeds_registry(k) for k in kind_set)
    out: dict[Hashable, Any] = {}
    for k, v in memo.items():
        if not isinstance(k, tuple) or not k:
            continue
        tag = k[0]
        last = k[-1]
        if isinstance(last, Reads):
            if not (registry_changed or last.kinds & kind_set or (nodes is not None and k[1] not in nodes)):
                out[k] = v
            continue
        if tag in drop or (tag not in _CARRIED and tag != "uses"):
            continue   # other tags (scope lookups, ...) are per push
        if tag == "uses":
            if k[1] in kind_set or (registry_changed and k[1] == "Service"):
                continue
        elif tag in per_host and k[1] in host_set:
            continue
        out[k] = v
    return out
