"""lb_endpoint shares the Istio workload metadata between calls (one Struct per workload string, copied into
each LbEndpoint): every proxy's EDS gets equal, independent messages."""

from __future__ import annotations

from google.protobuf import json_format

from mizzen.core.endpoints import lb_endpoint
from mizzen.registry.model import Endpoint


def ep(workload: str, version: str) -> Endpoint:
    return Endpoint(hostname="reviews.bookinfo.svc.cluster.local", service_port=9080, address="127.0.23.1",
                    port=9080, labels={"app": "reviews", "version": version}, workload=workload,
                    namespace="bookinfo")


def test_same_workload_equal_metadata_and_copies_are_independent() -> None:
    a, b = lb_endpoint(ep("reviews-v1-a", "v1")), lb_endpoint(ep("reviews-v1-a", "v1"))
    assert a == b
    a.metadata.filter_metadata["istio"].fields["workload"].string_value = "mutated"
    assert json_format.MessageToDict(b.metadata.filter_metadata["istio"]) == {
        "workload": "reviews-v1-a;bookinfo;reviews;v1;Kubernetes"}
    c = lb_endpoint(ep("reviews-v1-a", "v1"))
    assert c.metadata.filter_metadata["istio"].fields["workload"].string_value.startswith("reviews-v1-a;")


def test_different_workloads_get_their_own_metadata() -> None:
    v2 = lb_endpoint(ep("reviews-v2-b", "v2"))
    assert json_format.MessageToDict(v2.metadata.filter_metadata["istio"]) == {
        "workload": "reviews-v2-b;bookinfo;reviews;v2;Kubernetes"}
