"""RDS: route configurations from VirtualServices (sidecar outbound per port, gateway per server port).
(Stub: being written.)"""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2

from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext


def build_routes(proxy: Proxy, push: PushContext, names: list[str]) -> list[route_pb2.RouteConfiguration]:
    raise NotImplementedError
