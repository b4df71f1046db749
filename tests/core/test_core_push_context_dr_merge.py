"""PushContext: several DestinationRules for the same host in one namespace merge like Istio's
mergeDestinationRule (oldest is the base, later ones add missing subsets and a missing trafficPolicy)."""

from __future__ import annotations

from typing import Any

from mizzen.config.model import Config, ConfigSnapshot
from mizzen.core.push_context import PushContext, merge_destination_rules
from mizzen.registry.model import Protocol, RegistrySnapshot, Service, ServicePort

REVIEWS = "reviews.bookinfo.svc.cluster.local"


def dr(name: str, ns: str, created: float, **spec: Any) -> Config:
    return Config(kind="DestinationRule", api_version="networking.istio.io/v1", name=name, namespace=ns,
                  spec={"host": "reviews", **spec}, created=created)


def sub(name: str, version: str) -> dict[str, Any]:
    return {"name": name, "labels": {"version": version}}


def test_same_host_rules_in_one_namespace_merge_oldest_first() -> None:
    newer = dr("b-newer", "bookinfo", 2.0, subsets=[sub("v2", "v2"), sub("v1", "other")],
               trafficPolicy={"loadBalancer": {"simple": "RANDOM"}})
    older = dr("a-older", "bookinfo", 1.0, subsets=[sub("v1", "v1")])
    svc = Service(hostname=REVIEWS, namespace="bookinfo", name="reviews",
                  ports=(ServicePort("http", 9080, Protocol.HTTP),))
    push = PushContext.build(ConfigSnapshot.of([newer, older]), RegistrySnapshot(services=(svc,)))
    merged = push.destination_rule("elsewhere", REVIEWS)
    assert merged is not None and merged.name == "a-older"
    assert merged.spec["subsets"] == [sub("v1", "v1"), sub("v2", "v2")]     # v1 kept from the base
    assert merged.spec["trafficPolicy"] == {"loadBalancer": {"simple": "RANDOM"}}
    assert older.spec.get("trafficPolicy") is None                          # inputs untouched


def test_base_traffic_policy_wins_and_single_rule_is_returned_as_is() -> None:
    a = dr("a", "bookinfo", 1.0, trafficPolicy={"tls": {"mode": "DISABLE"}})
    b = dr("b", "bookinfo", 2.0, trafficPolicy={"tls": {"mode": "SIMPLE"}}, subsets=[sub("v3", "v3")])
    merged = merge_destination_rules([b, a])
    assert merged.spec["trafficPolicy"] == {"tls": {"mode": "DISABLE"}}
    assert merged.spec["subsets"] == [sub("v3", "v3")]
    assert merge_destination_rules([b]) is b
