"""The listener-plugin hook (core.plugins): registered plugins' HTTP filters land by phase around core's
fault/cors and before the router, network filters before the terminal filter, access loggers next to the
mesh's; a plugin sees the chain's direction, port and protocol; nothing is added once it is unregistered."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2
from google.protobuf.message import Message
from listeners_testkit import by_name, hcm_of, push_of, service, sidecar, tcp_of

from mizzen.core import filters, plugins
from mizzen.core.listeners import build_listeners
from mizzen.registry.model import Protocol


class _Recorder(plugins.ListenerPlugin):
    """A plugin that adds one filter per phase it is given and records the contexts it saw."""

    name = "test-recorder"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[plugins.Direction, int, bool]] = []

    def http_filters(self, ctx: plugins.ListenerContext) -> Sequence[plugins.Phased]:
        self.seen.append((ctx.direction, ctx.port, ctx.http))
        return [
            plugins.Phased(plugins.Phase.STATS, hcm_pb2.HttpFilter(name="test.stats")),
            plugins.Phased(plugins.Phase.AUTHZ, hcm_pb2.HttpFilter(
                name="envoy.filters.http.rbac", typed_config=filters.pack(rbac_pb2.RBAC()))),
            plugins.Phased(plugins.Phase.AUTHN, hcm_pb2.HttpFilter(name="test.authn")),
        ]

    def network_filters(self, ctx: plugins.ListenerContext) -> Sequence[plugins.Phased]:
        if ctx.http:
            return []
        return [plugins.Phased(plugins.Phase.AUTHZ, listener_components_pb2.Filter(
            name="envoy.filters.network.rbac",
            typed_config=filters.pack(net_rbac_pb2.RBAC(stat_prefix="tcp.")))),
        ]

    def access_logs(self, ctx: plugins.ListenerContext) -> Sequence[Message]:
        return [accesslog_pb2.AccessLog(name=f"test.log.{ctx.direction.value}")]


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    rec = _Recorder()
    plugins.register(rec)
    try:
        yield rec
    finally:
        plugins.unregister(rec.name)


def test_http_filters_by_phase_around_core_filters(recorder: _Recorder) -> None:
    svc = service("reviews", [(9080, Protocol.HTTP), (5000, Protocol.TCP)])
    lds = by_name(build_listeners(sidecar(), push_of([svc])))
    hcm = hcm_of(lds["127.0.10.1_9080"].filter_chains[0].filters[0])
    assert [f.name for f in hcm.http_filters] == [
        "test.authn", "envoy.filters.http.rbac", filters.FAULT, filters.CORS, "test.stats", filters.ROUTER]
    assert [a.name for a in hcm.access_log] == ["test.log.inbound"]
    tcp_chain = lds["127.0.10.1_5000"].filter_chains[0].filters
    assert [f.name for f in tcp_chain] == ["envoy.filters.network.rbac", filters.TCP_PROXY]
    assert [a.name for a in tcp_of(tcp_chain[1]).access_log] == ["test.log.inbound"]
    assert (plugins.Direction.INBOUND, 9080, True) in recorder.seen


def test_outbound_chains_carry_direction(recorder: _Recorder) -> None:
    proxy = sidecar(http_proxy_port=15080)
    lds = by_name(build_listeners(proxy, push_of([service("reviews", [(9080, Protocol.HTTP)])])))
    proxy_lis = next(lis for name, lis in lds.items() if name.endswith("_15080"))
    hcm = hcm_of(proxy_lis.filter_chains[0].filters[0])
    assert [a.name for a in hcm.access_log] == ["test.log.outbound"]
    assert (plugins.Direction.OUTBOUND, 15080, True) in recorder.seen


def test_nothing_added_without_plugins() -> None:
    # plugins registered process-wide by earlier tests (a ControlPlane registers security.authz) are set
    # aside for this test
    saved = list(plugins.PLUGINS)
    plugins.PLUGINS.clear()
    try:
        lds = by_name(build_listeners(sidecar(), push_of([service("reviews", [(9080, Protocol.HTTP)])])))
    finally:
        plugins.PLUGINS[:] = saved
    hcm = hcm_of(lds["127.0.10.1_9080"].filter_chains[0].filters[0])
    assert [f.name for f in hcm.http_filters] == [filters.FAULT, filters.CORS, filters.ROUTER]
