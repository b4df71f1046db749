"""EDS: ClusterLoadAssignments for outbound EDS clusters, subset-filtered, grouped by locality.
(Stub: being written.)"""

from __future__ import annotations

from envoy.config.endpoint.v3 import endpoint_pb2

from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext


def build_endpoints(proxy: Proxy, push: PushContext, cluster_names: list[str]) -> list[
        endpoint_pb2.ClusterLoadAssignment]:
    raise NotImplementedError
