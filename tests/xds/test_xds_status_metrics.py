"""The control plane's xDS metrics fed by the stream's status events (no sockets): a push counted per
response sent, a NACK counted once however often Envoy repeats it, convergence once the node is synced."""

from __future__ import annotations

from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest
from google.rpc import status_pb2
from xds_testlib import eds_cluster, load_assignment, resources

from mizzen.controlplane.metrics import Metrics, ObservedStatus
from mizzen.xds import SnapshotCache
from mizzen.xds.ads import AdsStream, SotwResponse
from mizzen.xds.resources import CLUSTER, ENDPOINT
from mizzen.xds.status import ProxyStatus

NODE = "sidecar~127.0.0.1~m1.default~default.svc.cluster.local"


def test_pushes_rejects_and_convergence_counted_at_their_events() -> None:
    cache = SnapshotCache()
    metrics = Metrics()
    status = ObservedStatus(cache, metrics)
    ps = ProxyStatus(NODE, 1)
    status.connect(ps)
    ads = AdsStream(ps, events=status)

    def value(name: str, **labels: str) -> float:
        v = metrics.registry.get_sample_value(name, labels)
        return v if v is not None else 0.0

    def push(port: int) -> list[SotwResponse]:
        cache.set_snapshot(NODE, resources(clusters=[eds_cluster("a")],
                                           endpoints=[load_assignment("a", [("127.0.0.2", port)])]))
        status.changed([NODE], since=0.0)
        out = ads.set_snapshot(cache.get(NODE))
        assert all(isinstance(r, SotwResponse) for r in out)
        return [r for r in out if isinstance(r, SotwResponse)]

    def request(r: SotwResponse, error: str | None = None) -> None:
        req = DiscoveryRequest(type_url=r.type_url, response_nonce=r.nonce, version_info=r.tsnap.version,
                               resource_names=["a"] if r.type_url == ENDPOINT else [])
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        ads.sotw_request(req)

    push(80)
    (cds,) = ads.sotw_request(DiscoveryRequest(type_url=CLUSTER))
    (eds,) = ads.sotw_request(DiscoveryRequest(type_url=ENDPOINT, resource_names=["a"]))
    assert isinstance(cds, SotwResponse) and isinstance(eds, SotwResponse)
    assert value("pilot_xds_pushes_total", type="cds") == 1
    assert value("pilot_xds_pushes_total", type="eds") == 1
    assert value("pilot_proxy_convergence_time_count") == 0
    request(cds)
    request(eds)
    assert value("pilot_proxy_convergence_time_count") == 1   # synced: observed once
    (eds2,) = push(81)
    assert value("pilot_xds_pushes_total", type="eds") == 2
    request(eds2, error="bad endpoint")
    request(eds2, error="bad endpoint")   # Envoy repeating its NACK of the same response
    assert value("pilot_total_xds_rejects_total", type="eds") == 1
    assert value("pilot_proxy_convergence_time_count") == 1
    (eds3,) = push(82)
    request(eds3)
    assert value("pilot_xds_pushes_total", type="eds") == 3
    assert value("pilot_proxy_convergence_time_count") == 2
    assert value("pilot_xds_config_size_bytes_count", type="eds") == 3
