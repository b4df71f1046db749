"""Delegation keeps the root rule's source conditions (Istio's mergeHTTPMatchRequest / hasConflict): a root
match with ``sourceLabels``, ``sourceNamespace`` or ``gateways`` restricts the delegated rules to the same
clients, a child whose own source conditions contradict the root's is dropped, and ``mirrors`` and
``directResponse`` are inherited like the other root fields."""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from routes_testkit import fqdn, push_of, route_config, sidecar, vhost, vs_yaml

from mizzen.config.model import Config
from mizzen.core.delegate import merge_http_route

REVIEWS = fqdn("reviews")
V1 = {"destination": {"host": REVIEWS, "subset": "v1"}}
V3 = {"destination": {"host": "reviews", "subset": "v3"}}


def _child(http: list[dict[str, Any]]) -> Config:
    return Config(kind="VirtualService", api_version="networking.istio.io/v1", name="child", namespace="team",
                  spec={"http": http})


def _routes(root_match: dict[str, Any], child_http: list[dict[str, Any]],
            labels: dict[str, str]) -> list[rc.Route]:
    root = vs_yaml("root", ["reviews"], [
        {"name": "r", "match": [root_match], "delegate": {"name": "child", "namespace": "team"}},
        {"route": [V3]},
    ])
    cfg = route_config(sidecar(labels=labels), push_of([root, _child(child_http)]), "9080")
    return list(vhost(cfg, f"{REVIEWS}:9080").routes)


def test_core_delegated_rules_keep_the_root_source_labels() -> None:
    child = [{"name": "c", "match": [{"uri": {"prefix": "/api"}}], "route": [V1]}]
    match = {"uri": {"prefix": "/"}, "sourceLabels": {"app": "productpage"}}
    picked = _routes(match, child, {"app": "productpage"})
    assert [(r.name, r.route.cluster.split("|")[2]) for r in picked] == [("r-c", "v1"), ("", "v3")]
    # another client: the delegated rule is not for it (before, the root's sourceLabels were dropped)
    other = _routes(match, child, {"app": "ratings"})
    assert [(r.name, r.route.cluster.split("|")[2]) for r in other] == [("", "v3")]


def test_core_delegated_rules_keep_the_root_gateways_and_namespace() -> None:
    child = [{"name": "c", "route": [V1]}]
    pp = {"app": "productpage"}
    only_gateway = _routes({"uri": {"prefix": "/"}, "gateways": ["bookinfo/gw"]}, child, pp)
    assert [r.name for r in only_gateway] == [""]
    other_ns = _routes({"uri": {"prefix": "/"}, "sourceNamespace": "elsewhere"}, child, pp)
    assert [r.name for r in other_ns] == [""]
    own_ns = _routes({"uri": {"prefix": "/"}, "sourceNamespace": "bookinfo"}, child, pp)
    assert [r.name for r in own_ns] == ["r-c"]   # a catch-all for this client: the rest is unreachable


def test_core_child_source_conditions_that_contradict_the_root_drop_the_rule() -> None:
    root = {"name": "r", "match": [{"sourceLabels": {"app": "productpage"}, "gateways": ["mesh"]}]}
    assert merge_http_route(root, {"match": [{"sourceLabels": {"app": "ratings"}}], "route": [V1]}) is None
    assert merge_http_route(root, {"match": [{"gateways": ["bookinfo/gw"]}], "route": [V1]}) is None
    merged = merge_http_route(root, {"match": [{"sourceLabels": {"version": "v1"}}], "route": [V1]})
    assert merged is not None
    labels = {"app": "productpage", "version": "v1"}
    assert merged["match"] == [{"sourceLabels": labels, "gateways": ["mesh"]}]


def test_core_mirrors_and_direct_response_are_inherited() -> None:
    mirrors = [{"destination": {"host": "shadow"}}]
    merged = merge_http_route({"mirrors": mirrors, "directResponse": {"status": 418}}, {"route": [V1]})
    assert merged is not None and merged["mirrors"] == mirrors and merged["directResponse"] == {"status": 418}
