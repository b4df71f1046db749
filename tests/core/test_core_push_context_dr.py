"""PushContext.destination_rule: Istio's lookup order (proxy ns, service ns, root ns), exact host over
wildcard, longer wildcard over shorter, exportTo and workloadSelector, answered from the per-push index."""

from __future__ import annotations

from typing import Any

from mizzen.config.model import Config, ConfigSnapshot
from mizzen.core.push_context import PushContext
from mizzen.registry.model import Protocol, RegistrySnapshot, Service, ServicePort

REVIEWS = "reviews.bookinfo.svc.cluster.local"


def dr(name: str, ns: str, host: str, **spec: Any) -> Config:
    return Config(kind="DestinationRule", api_version="networking.istio.io/v1", name=name, namespace=ns,
                  spec={"host": host, **spec})


def push(*drs: Config) -> PushContext:
    svc = Service(hostname=REVIEWS, namespace="bookinfo", name="reviews",
                  ports=(ServicePort("http", 9080, Protocol.HTTP),))
    return PushContext.build(ConfigSnapshot.of(drs), RegistrySnapshot(services=(svc,)))


def name_of(c: Config | None) -> str | None:
    return c.name if c is not None else None


def test_exact_beats_wildcard_whatever_the_order() -> None:
    p = push(dr("a-wild", "bookinfo", "*.svc.cluster.local"), dr("b-exact", "bookinfo", "reviews"),
             dr("c-wild", "bookinfo", "*.bookinfo.svc.cluster.local"))
    assert name_of(p.destination_rule("bookinfo", REVIEWS)) == "b-exact"


def test_longer_wildcard_wins_and_non_matching_hosts_are_ignored() -> None:
    p = push(dr("a", "bookinfo", "*"), dr("b", "bookinfo", "*.bookinfo.svc.cluster.local"),
             dr("c", "bookinfo", "*.svc.cluster.local"), dr("d", "bookinfo", "ratings"))
    assert name_of(p.destination_rule("bookinfo", REVIEWS)) == "b"
    assert name_of(p.destination_rule("bookinfo", "details.other.svc.cluster.local")) == "c"


def test_search_order_proxy_namespace_then_service_then_root() -> None:
    p = push(dr("in-root", "istio-system", REVIEWS), dr("in-svc", "bookinfo", "reviews"),
             dr("in-client", "client", REVIEWS))
    assert name_of(p.destination_rule("client", REVIEWS)) == "in-client"
    assert name_of(p.destination_rule("elsewhere", REVIEWS)) == "in-svc"
    only_root = push(dr("in-root", "istio-system", REVIEWS))
    assert name_of(only_root.destination_rule("elsewhere", REVIEWS)) == "in-root"
    assert only_root.destination_rule("elsewhere", "nothing.x.svc.cluster.local") is None


def test_export_to_and_workload_selector_are_honoured() -> None:
    p = push(dr("private", "bookinfo", "reviews", exportTo=["."]),
             dr("scoped", "client", REVIEWS, workloadSelector={"matchLabels": {"app": "x"}}),
             dr("wild", "bookinfo", "*.bookinfo.svc.cluster.local"))
    assert name_of(p.destination_rule("bookinfo", REVIEWS)) == "private"
    # from another namespace the private exact DR is invisible: the exported wildcard applies
    assert name_of(p.destination_rule("client", REVIEWS)) == "wild"
