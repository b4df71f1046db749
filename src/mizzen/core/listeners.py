"""LDS: sidecar inbound/outbound listeners and gateway listeners. (Stub: being written.)"""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2

from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext


def build_listeners(proxy: Proxy, push: PushContext) -> list[listener_pb2.Listener]:
    raise NotImplementedError


def route_config_names(listeners: list[listener_pb2.Listener]) -> list[str]:
    """Names of the RDS route configurations the listeners reference."""
    raise NotImplementedError
