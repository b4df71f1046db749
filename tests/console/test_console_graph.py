"""The console's graph from Prometheus vectors (pure): views, shares of a source's traffic, errors, p95,
mTLS, and traffic only a source reported."""

from __future__ import annotations

from typing import Any

import pytest

from mizzen.console.graph import build_graph, queries


def sample(src: str, dst: str, rate: float, code: str = "200", mtls: bool = True,
           **extra: str) -> dict[str, Any]:
    sapp, sver = src.rsplit("-", 1)
    dapp, dver = dst.rsplit("-", 1)
    m = {"source_workload_namespace": "bookinfo", "source_workload": src, "source_app": sapp,
         "source_version": sver, "destination_service_namespace": "bookinfo",
         "destination_service_name": dapp,
         "destination_workload_namespace": "bookinfo", "destination_workload": dst, "destination_app": dapp,
         "destination_version": dver, "response_code": code,
         "connection_security_policy": "mutual_tls" if mtls else "none", **extra}
    return {"metric": m, "value": [0, str(rate)]}


CANARY = {
    "dest_in": [sample("productpage-v1", "reviews-v1", 8.0), sample("productpage-v1", "reviews-v2", 2.0),
                sample("productpage-v1", "details-v1", 10.0),
                sample("reviews-v2", "ratings-v1", 1.5), sample("reviews-v2", "ratings-v1", 0.5, code="500")],
    "p95": [{"metric": sample("productpage-v1", "reviews-v1", 0)["metric"], "value": [0, "12.5"]},
            {"metric": sample("productpage-v1", "reviews-v2", 0)["metric"], "value": [0, "NaN"]}],
}


Edges = dict[tuple[str, str], dict[str, Any]]


def edges(view: str, results: dict[str, list[dict[str, Any]]] = CANARY) -> Edges:
    g = build_graph(view, results).to_json()
    return {(e["source"], e["target"]): e for e in g["edges"]}


def test_versioned_app_view_shows_the_split_as_shares() -> None:
    e = edges("versionedApp")
    v1 = e[("va:bookinfo/productpage/v1", "va:bookinfo/reviews/v1")]
    v2 = e[("va:bookinfo/productpage/v1", "va:bookinfo/reviews/v2")]
    assert v1["percent"] == 80.0 and v2["percent"] == 20.0   # of productpage's 10 rps to reviews
    assert v1["p95"] == 12.5 and v2["p95"] is None
    assert v1["mtls"]
    g = build_graph("versionedApp", CANARY).to_json()
    boxes = {n["id"] for n in g["nodes"] if n["kind"] == "box"}
    assert "box:bookinfo/reviews" in boxes


def test_app_view_merges_versions_and_counts_errors() -> None:
    e = edges("app")
    assert e[("app:bookinfo/productpage", "app:bookinfo/reviews")]["rate"] == 10.0
    ratings = e[("app:bookinfo/reviews", "app:bookinfo/ratings")]
    assert ratings["errorRate"] == 0.25
    assert ratings["codes"] == {"200": 1.5, "500": 0.5}


def test_workload_and_service_views() -> None:
    assert ("wl:bookinfo/productpage-v1", "wl:bookinfo/reviews-v2") in edges("workload")
    assert ("app:bookinfo/productpage", "svc:bookinfo/reviews") in edges("service")


def test_plaintext_edge_is_not_mtls_and_source_only_traffic_is_shown() -> None:
    results = {"dest_in": [sample("productpage-v1", "reviews-v1", 1.0, mtls=False)],
               "source_out": [sample("reviews-v1", "ratings-v1", 3.0),           # no destination report
                              sample("productpage-v1", "reviews-v1", 1.0)]}      # already reported
    e = edges("workload", results)
    assert not e[("wl:bookinfo/productpage-v1", "wl:bookinfo/reviews-v1")]["mtls"]
    assert e[("wl:bookinfo/productpage-v1", "wl:bookinfo/reviews-v1")]["rate"] == 1.0
    assert e[("wl:bookinfo/reviews-v1", "wl:bookinfo/ratings-v1")]["rate"] == 3.0


def test_unknown_source_is_one_node() -> None:
    s = sample("productpage-v1", "reviews-v1", 1.0)
    s["metric"]["source_workload"] = "unknown"
    assert ("unknown", "va:bookinfo/reviews/v1") in edges("versionedApp", {"dest_in": [s]})


def test_queries_name_istio_metrics_and_reject_unknown_views() -> None:
    q = queries(["bookinfo"])
    assert 'rate(istio_requests_total{reporter="destination"' in q["dest_in"]
    assert "istio_request_duration_milliseconds_bucket" in q["p95"]
    with pytest.raises(ValueError):
        build_graph("nodes", {})
