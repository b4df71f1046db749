"""The SotW subscription on each request: an ACK usually repeats the names of the request before it (the
stream then skips rebuilding its subscription), but a subscription can change in any request, an ACK
included."""

from __future__ import annotations

from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest
from xds_testlib import eds_cluster, listener, load_assignment, resources, route_config

from mizzen.xds import SnapshotCache
from mizzen.xds.ads import AdsStream, SotwResponse
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from mizzen.xds.status import ProxyStatus, SyncStatus

NODE = "sidecar~127.0.0.1~s1.default~default.svc.cluster.local"
EDS_NAMES = [f"outbound|9080||svc{i}.default.svc.cluster.local" for i in range(8)]


def test_an_ack_that_changes_the_names_is_answered_for_the_new_ones() -> None:
    """A stream's EDS ACK naming as many clusters as before but another one: answered with the new set."""
    names = [*EDS_NAMES, "other"]
    rs = resources(clusters=[eds_cluster(n) for n in names],
                   endpoints=[load_assignment(n, [("127.0.0.2", 80)]) for n in names],
                   listeners=[listener("l1", "127.0.0.1", 15001, "r1")], routes=[route_config("r1")])
    cache = SnapshotCache()
    cache.set_snapshot(NODE, rs)
    ads = AdsStream(ProxyStatus(NODE, 1), events=SyncStatus(cache))
    ads.snapshot = cache.get(NODE)
    for t, sub in ((CLUSTER, []), (LISTENER, []), (ROUTE, ["r1"])):
        for resp in ads.sotw_request(DiscoveryRequest(type_url=t, resource_names=sub)):
            assert isinstance(resp, SotwResponse)
            ads.sotw_request(DiscoveryRequest(type_url=resp.type_url, version_info=resp.tsnap.version,
                                              response_nonce=resp.nonce, resource_names=sub))
    first = ads.sotw_request(DiscoveryRequest(type_url=ENDPOINT, resource_names=EDS_NAMES))
    assert [r.names for r in first if isinstance(r, SotwResponse)] == [frozenset(EDS_NAMES)]
    resp = first[0]
    assert isinstance(resp, SotwResponse)
    ack = DiscoveryRequest(type_url=ENDPOINT, version_info=resp.tsnap.version, response_nonce=resp.nonce,
                           resource_names=EDS_NAMES)
    assert ads.sotw_request(ack) == []   # the same names: nothing to send
    swapped = [*EDS_NAMES[:-1], "other"]
    again = ads.sotw_request(DiscoveryRequest(type_url=ENDPOINT, version_info=resp.tsnap.version,
                                              response_nonce=resp.nonce, resource_names=swapped))
    assert [r.names for r in again if isinstance(r, SotwResponse)] == [frozenset(swapped)]
    assert ads.subscribed()[ENDPOINT] == frozenset(swapped)
