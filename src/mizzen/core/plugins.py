"""Listener plugins: the hook through which pillars outside core add filters to the listeners core builds.

Like Istio's networking plugins (``pilot/pkg/networking/plugin``: authn, authz, telemetry), security
(``jwt_authn``, ``rbac``, ``ext_authz``) and telemetry (stats, access logs) live in their own packages and
register a :class:`ListenerPlugin` here; core asks every registered plugin, for each filter chain it builds,
what to add, and places it:

- HTTP filters by :class:`Phase`: authentication, then authorization, then core's own ``fault`` and ``cors``,
  then stats, then the router (always last);
- network filters before the chain's terminal filter (``tcp_proxy`` or the HTTP connection manager);
- access loggers next to the mesh config's access log;
- the HTTP connection manager's ``tracing`` settings and its early header mutations (applied to each request
  before any filter, cheaper than a filter that does the same);
- request headers the router removes before it forwards a request, on chains whose route configuration is
  inline (inbound; cheaper than a filter that removes them, and the filters still see them).

A plugin's output must depend only on what :class:`ListenerContext` gives it (the proxy, the push, the
direction and port of the chain): listeners are generated per proxy (LDS's key is the proxy itself), so per
proxy values are safe here. The config kinds a plugin reads must be declared with ``read_by=("LDS",)`` in
``config.kinds`` so that a change to them re-pushes listeners, and on the plugin
(:attr:`ListenerPlugin.reads`) so that core keeps what the plugins added to a proxy's chains across pushes
that change none of them (a VirtualService change rebuilds listeners, not their authz and telemetry
filters). Plugins never mutate what
they are given, and what they return is shared (never mutated either).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum

from google.protobuf.message import Message

from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext

__all__ = [
    "NONE",
    "PLUGINS",
    "Direction",
    "Extensions",
    "ListenerContext",
    "ListenerPlugin",
    "Phase",
    "Phased",
    "extensions",
    "kinds_read",
    "register",
    "unregister",
]


class Direction(str, Enum):
    """Which kind of chain is being built."""

    INBOUND = "inbound"      # a sidecar's inbound port (traffic to its workload)
    OUTBOUND = "outbound"    # a sidecar's outbound listener (traffic from its workload)
    GATEWAY = "gateway"      # a gateway server's chain


class Phase(IntEnum):
    """Where an HTTP (or network) filter goes; lower runs first. Core's ``fault`` and ``cors`` sit at
    ``CORE``; the router is always last."""

    AUTHN = 100      # envoy.filters.http.jwt_authn
    AUTHZ = 200      # envoy.filters.http.ext_authz (CUSTOM), then envoy.filters.http.rbac
    CORE = 300       # core's fault, cors
    STATS = 400      # telemetry


@dataclass(frozen=True)
class ListenerContext:
    """One filter chain being built: for whom, which direction, which port and whether it speaks HTTP.

    ``port`` is the workload's (target) port inbound, the service port outbound and the listen port on
    gateways; 0 for catch-all chains (passthrough, blackhole)."""

    proxy: Proxy
    push: PushContext
    direction: Direction
    port: int
    http: bool


@dataclass(frozen=True)
class Phased:
    """A filter (``HttpFilter`` or listener ``Filter`` message) and its phase."""

    phase: int
    filter: Message


class ListenerPlugin:
    """What a pillar adds to listeners. Subclass it and override what the pillar adds; the defaults add
    nothing (so new hooks can be added here without touching every plugin)."""

    name: str = ""
    # the config kinds the plugin's output is built from, besides the proxy, the mesh config and the registry;
    # None: any kind listeners read
    reads: frozenset[str] | None = None

    def http_filters(self, ctx: ListenerContext) -> Sequence[Phased]:
        """HTTP filters (``hcm_pb2.HttpFilter``) for an HTTP chain."""
        return ()

    def network_filters(self, ctx: ListenerContext) -> Sequence[Phased]:
        """Network filters (``listener_components_pb2.Filter``) before the chain's terminal filter."""
        return ()

    def access_logs(self, ctx: ListenerContext) -> Sequence[Message]:
        """Access loggers (``accesslog_pb2.AccessLog``) for the chain's terminal filter."""
        return ()

    def tracing(self, ctx: ListenerContext) -> Message | None:
        """The HTTP connection manager's ``tracing`` (``HttpConnectionManager.Tracing``); the first plugin
        that returns one wins."""
        return None

    def early_header_mutations(self, ctx: ListenerContext) -> Sequence[Message]:
        """The HTTP connection manager's ``early_header_mutation_extensions`` (``TypedExtensionConfig``) for
        an HTTP chain."""
        return ()

    def request_headers_to_remove(self, ctx: ListenerContext) -> Sequence[str]:
        """Request headers the router removes before forwarding (the route configuration's
        ``request_headers_to_remove``), for an HTTP chain with an inline route configuration (inbound)."""
        return ()


@dataclass(frozen=True)
class Extensions:
    """Everything the registered plugins add to one chain, in order."""

    http_before: tuple[Message, ...] = ()    # before core's fault/cors
    http_after: tuple[Message, ...] = ()     # after them, before the router
    network: tuple[Message, ...] = ()        # before the terminal filter
    access_logs: tuple[Message, ...] = ()
    tracing: Message | None = None
    early_header_mutations: tuple[Message, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()


NONE = Extensions()

PLUGINS: list[ListenerPlugin] = []


def register(plugin: ListenerPlugin) -> None:
    """Add a plugin (replacing one of the same name, so re-registration is harmless)."""
    unregister(plugin.name)
    PLUGINS.append(plugin)


def unregister(name: str) -> None:
    PLUGINS[:] = [p for p in PLUGINS if p.name != name]


def kinds_read(otherwise: frozenset[str]) -> frozenset[str]:
    """The config kinds the registered plugins read together (``otherwise`` if one does not say)."""
    out: set[str] = set()
    for p in PLUGINS:
        if p.reads is None:
            return otherwise
        out |= p.reads
    return frozenset(out)


def extensions(ctx: ListenerContext) -> Extensions:
    """Ask every registered plugin what it adds to the chain ``ctx`` describes."""
    if not PLUGINS:
        return NONE
    http: list[Phased] = []
    network: list[Phased] = []
    logs: list[Message] = []
    tracing: Message | None = None
    early: list[Message] = []
    removed: list[str] = []
    for p in PLUGINS:
        if ctx.http:
            http.extend(p.http_filters(ctx))
            early.extend(p.early_header_mutations(ctx))
            removed.extend(p.request_headers_to_remove(ctx))
            if tracing is None:
                tracing = p.tracing(ctx)
        network.extend(p.network_filters(ctx))
        logs.extend(p.access_logs(ctx))
    http.sort(key=lambda f: f.phase)     # stable: plugins keep registration order within a phase
    network.sort(key=lambda f: f.phase)
    return Extensions(
        http_before=tuple(f.filter for f in http if f.phase < Phase.CORE),
        http_after=tuple(f.filter for f in http if f.phase >= Phase.CORE),
        network=tuple(f.filter for f in network),
        access_logs=tuple(logs),
        tracing=tracing,
        early_header_mutations=tuple(early),
        request_headers_to_remove=tuple(removed),
    )
