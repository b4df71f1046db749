"""EDS translation: subset filtering, locality groups (always with a locality message), weights, health,
endpoint metadata, and Istio's locality failover/distribute rules relative to the calling proxy."""

from __future__ import annotations

from typing import Any

from _clusters_fixtures import (
    BOOKINFO_NET,
    addresses,
    bookinfo_push,
    configs_from_file,
    dr,
    fqdn,
    sidecar,
    workload,
)
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import json_format

from mizzen.core import names
from mizzen.core.clusters import build_clusters, uses_eds
from mizzen.core.endpoints import build_endpoints

REVIEWS = fqdn("reviews")


def assignments(push: Any, proxy: Any = None, names_: list[str] | None = None) -> dict[
        str, endpoint_pb2.ClusterLoadAssignment]:
    proxy = proxy or sidecar()
    if names_ is None:
        names_ = [c.name for c in build_clusters(proxy, push) if uses_eds(c)]
    return {a.cluster_name: a for a in build_endpoints(proxy, push, names_)}


def test_bookinfo_subset_filtering() -> None:
    push = bookinfo_push(*configs_from_file(BOOKINFO_NET / "destination-rule-all.yaml"))
    cla = assignments(push)
    assert addresses(cla[names.outbound_cluster(9080, "", REVIEWS)]) == [
        "127.0.20.4:9080", "127.0.20.5:9080", "127.0.20.6:9080"]
    assert addresses(cla[names.outbound_cluster(9080, "v1", REVIEWS)]) == ["127.0.20.4:9080"]
    assert addresses(cla[names.outbound_cluster(9080, "v2", REVIEWS)]) == ["127.0.20.5:9080"]
    assert addresses(cla[names.outbound_cluster(9080, "v3", REVIEWS)]) == ["127.0.20.6:9080"]
    # subsets with no matching workload still get an (empty) assignment
    empty = cla[names.outbound_cluster(9080, "v2-mysql", fqdn("ratings"))]
    assert list(empty.endpoints) == [] and empty.cluster_name.endswith("ratings.bookinfo.svc.cluster.local")
    assert list(cla) == sorted(cla)
    every_eds = {c.name for c in build_clusters(sidecar(), push) if uses_eds(c)}
    assert set(cla) == every_eds


def test_locality_always_set_weights_health_metadata() -> None:
    ws = [workload("reviews-v1-a", "127.0.21.1", {"app": "reviews", "version": "v1"}),
          workload("reviews-v2-a", "127.0.21.2", {"app": "reviews", "version": "v2"}, weight=3,
                   locality="us-east/zone-a"),
          workload("reviews-v3-a", "127.0.21.3", {"app": "reviews", "version": "v3"}, healthy=False,
                   locality="us-east/zone-a")]
    cla = assignments(bookinfo_push(workloads=ws))[names.outbound_cluster(9080, "", REVIEWS)]
    assert len(cla.endpoints) == 2
    no_loc, east = cla.endpoints
    assert no_loc.HasField("locality")   # gRPC proxyless clients need it even when empty
    assert (no_loc.locality.region, no_loc.locality.zone) == ("", "")
    assert (east.locality.region, east.locality.zone, east.locality.sub_zone) == ("us-east", "zone-a", "")
    assert no_loc.load_balancing_weight.value == 1 and east.load_balancing_weight.value == 4
    v1 = no_loc.lb_endpoints[0]
    assert v1.health_status == health_check_pb2.HEALTHY and not v1.HasField("load_balancing_weight")
    v2, v3 = east.lb_endpoints
    assert v2.load_balancing_weight.value == 3
    assert v3.health_status == health_check_pb2.UNHEALTHY
    md = json_format.MessageToDict(v2.metadata.filter_metadata["istio"])
    assert md == {"workload": "reviews-v2-a;bookinfo;reviews;v2;Kubernetes"}


def _regional() -> list[Any]:
    labels = {"app": "reviews", "version": "v1"}
    return [workload("r-local", "127.0.22.1", labels, locality="us-east/a/s1"),
            workload("r-zone", "127.0.22.2", labels, locality="us-east/a/s2"),
            workload("r-region", "127.0.22.3", labels, locality="us-east/b"),
            workload("r-west", "127.0.22.4", labels, locality="us-west/c"),
            workload("r-eu", "127.0.22.5", labels, locality="eu/d")]


def _priorities(cla: endpoint_pb2.ClusterLoadAssignment) -> dict[str, int]:
    return {f"{g.locality.region}/{g.locality.zone}/{g.locality.sub_zone}": g.priority for g in cla.endpoints}


def test_failover_priorities_need_outlier_detection() -> None:
    proxy = sidecar(locality="us-east/a/s1")
    key = names.outbound_cluster(9080, "", REVIEWS)
    plain = assignments(bookinfo_push(workloads=_regional()), proxy)[key]
    assert set(_priorities(plain).values()) == {0}
    with_od = bookinfo_push(dr("reviews", {"host": "reviews", "trafficPolicy": {
        "outlierDetection": {"consecutive5xxErrors": 1}}}), workloads=_regional())
    assert _priorities(assignments(with_od, proxy)[key]) == {
        "us-east/a/s1": 0, "us-east/a/s2": 1, "us-east/b/": 2, "us-west/c/": 3, "eu/d/": 3}
    explicit = bookinfo_push(dr("reviews", {"host": "reviews", "trafficPolicy": {
        "outlierDetection": {"consecutive5xxErrors": 1},
        "loadBalancer": {"localityLbSetting": {"enabled": True,
                                               "failover": [{"from": "us-east", "to": "eu"}]}}}}),
        workloads=_regional())
    # a region failover pair makes the named region preferred over other regions
    assert _priorities(assignments(explicit, proxy)[key]) == {
        "us-east/a/s1": 0, "us-east/a/s2": 1, "us-east/b/": 2, "eu/d/": 3, "us-west/c/": 4}
    disabled = bookinfo_push(dr("reviews", {"host": "reviews", "trafficPolicy": {
        "outlierDetection": {"consecutive5xxErrors": 1},
        "loadBalancer": {"localityLbSetting": {"enabled": False}}}}), workloads=_regional())
    assert set(_priorities(assignments(disabled, proxy)[key]).values()) == {0}


def test_distribute_weights() -> None:
    proxy = sidecar(locality="us-east/a/s1")
    rule = {"from": "us-east/a/*", "to": {"us-east/*": 80, "us-west/*": 20}}
    push = bookinfo_push(dr("reviews", {"host": "reviews", "trafficPolicy": {"loadBalancer": {
        "localityLbSetting": {"distribute": [rule]}}}}), workloads=_regional())
    cla = assignments(push, proxy)[names.outbound_cluster(9080, "", REVIEWS)]
    weights = {f"{g.locality.region}/{g.locality.zone}/{g.locality.sub_zone}": (g.load_balancing_weight.value,
                                                                               len(g.lb_endpoints))
               for g in cla.endpoints}
    # us-east's 80 is shared by its three groups (one endpoint each, ceil); eu matches no rule: emptied
    assert weights == {"us-east/a/s1": (27, 1), "us-east/a/s2": (27, 1), "us-east/b/": (27, 1),
                       "us-west/c/": (20, 1), "eu/d/": (1, 0)}
    # a proxy the rule's "from" does not match gets the plain weights
    other = assignments(push, sidecar(locality="eu/d"))[names.outbound_cluster(9080, "", REVIEWS)]
    assert {g.load_balancing_weight.value for g in other.endpoints} == {1}


def test_failover_priority_labels() -> None:
    ws = [workload("r1", "127.0.23.1", {"app": "reviews", "version": "v1", "tier": "gold"},
                   locality="us-east/a"),
          workload("r2", "127.0.23.2", {"app": "reviews", "version": "v1", "tier": "silver"},
                   locality="us-east/a"),
          workload("r3", "127.0.23.3", {"app": "reviews", "version": "v1", "tier": "gold"},
                   locality="us-west/b")]
    push = bookinfo_push(dr("reviews", {"host": "reviews", "trafficPolicy": {
        "outlierDetection": {"consecutive5xxErrors": 2},
        "loadBalancer": {"localityLbSetting": {
            "failoverPriority": ["tier", "topology.kubernetes.io/region"]}}}}),
        workloads=ws)
    proxy = sidecar(labels={"app": "productpage", "tier": "gold"}, locality="us-east/a")
    cla = assignments(push, proxy)[names.outbound_cluster(9080, "", REVIEWS)]
    prio = {lb.endpoint.address.socket_address.address: g.priority
            for g in cla.endpoints for lb in g.lb_endpoints}
    # gold + same region first, gold in another region next, silver last
    assert prio == {"127.0.23.1": 0, "127.0.23.3": 1, "127.0.23.2": 2}


def test_unknown_and_non_outbound_cluster_names() -> None:
    push = bookinfo_push()
    got = assignments(push, names_=[names.outbound_cluster(9080, "nope", REVIEWS), "inbound|9080||",
                                    names.outbound_cluster(9999, "", REVIEWS)])
    assert set(got) == {names.outbound_cluster(9080, "nope", REVIEWS), "inbound|9080||",
                        names.outbound_cluster(9999, "", REVIEWS)}
    assert all(not a.endpoints for a in got.values())
