"""Packed xDS resources (``Any`` messages, as the snapshot cache holds them) back into a :class:`ResourceSet`
the simulator can read: listeners, route configurations, clusters and load assignments."""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceSet

__all__ = ["resources_from_any"]

_TYPES: Mapping[str, type[Message]] = {
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
}


def resources_from_any(by_type: Mapping[str, Mapping[str, any_pb2.Any]]) -> ResourceSet:
    """Unpack every resource of a known type (others, e.g. secrets, are left out)."""
    out: dict[str, dict[str, Message]] = {}
    for type_url, items in by_type.items():
        cls = _TYPES.get(type_url)
        if cls is None:
            continue
        msgs: dict[str, Message] = {}
        for name, packed in items.items():
            msg = cls()
            if packed.Unpack(msg):
                msgs[name] = msg
        out[type_url] = msgs
    return ResourceSet(out)
