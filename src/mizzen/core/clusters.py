"""CDS: outbound clusters per service port and subset (with DestinationRule policies), inbound clusters,
and the fixed BlackHole/Passthrough clusters. (Stub: being written.)"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2

from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext


def build_clusters(proxy: Proxy, push: PushContext) -> list[cluster_pb2.Cluster]:
    raise NotImplementedError


def uses_eds(cluster: cluster_pb2.Cluster) -> bool:
    return cluster.type == cluster_pb2.Cluster.EDS
