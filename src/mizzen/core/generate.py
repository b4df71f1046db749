"""Entry point of the translation core: one proxy + one PushContext -> its full xDS resource set.

Each xDS type has its own builder module (clusters, endpoints, listeners/gateway, routes); this module only
orders them and collects the names each one references, so the set is consistent (every route names a
cluster that exists, every EDS cluster has a load assignment).
"""

from __future__ import annotations

from mizzen.core import clusters, endpoints, grpcgen, listeners, routes
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceSet


def generate(proxy: Proxy, push: PushContext) -> ResourceSet:
    if grpcgen.is_proxyless(proxy):   # a proxyless gRPC client: api_listeners, its own clusters
        return grpcgen.generate_proxyless(proxy, push)
    cds = clusters.build_clusters(proxy, push)
    eds = endpoints.build_endpoints(proxy, push, [c.name for c in cds if clusters.uses_eds(c)])
    lds = listeners.build_listeners(proxy, push)
    rds = routes.build_routes(proxy, push, listeners.route_config_names(lds))
    return ResourceSet({
        CLUSTER: {c.name: c for c in cds},
        ENDPOINT: {e.cluster_name: e for e in eds},
        LISTENER: {lis.name: lis for lis in lds},
        ROUTE: {r.name: r for r in rds},
    })
