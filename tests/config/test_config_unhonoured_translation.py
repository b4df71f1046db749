"""UNHONOURED entries checked against the real translation (mizzen.core): each claim below holds today, so
the warning users get is true; when a feature lands, its test here fails and says which entry to remove."""

from __future__ import annotations

from typing import Any

from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2

from mizzen.config.model import Config, ConfigSnapshot
from mizzen.config.validation.unhonoured import UNHONOURED
from mizzen.core.cluster_policy import HTTP_PROTOCOL_OPTIONS
from mizzen.core.clusters import build_clusters
from mizzen.core.proxy import Proxy, ProxyType, node_id
from mizzen.core.push_context import PushContext
from mizzen.registry.model import Protocol, RegistrySnapshot, Service, ServicePort

HOST = "reviews.shop.svc.cluster.local"
CLUSTER = f"outbound|9080||{HOST}"


def _cluster(dr_spec: dict[str, Any]) -> Any:
    dr = Config(kind="DestinationRule", api_version="networking.istio.io/v1", name="dr", namespace="shop",
                spec={"host": "reviews", **dr_spec})
    svc = Service(hostname=HOST, namespace="shop", name="reviews",
                  ports=(ServicePort("http", 9080, Protocol.HTTP),))
    push = PushContext.build(ConfigSnapshot.of([dr]), RegistrySnapshot(services=(svc,)))
    proxy = Proxy(id=node_id(ProxyType.SIDECAR, "127.0.30.1", "app-1", "shop"), type=ProxyType.SIDECAR,
                  ip="127.0.30.1", namespace="shop", labels={"app": "app"})
    return {c.name: c for c in build_clusters(proxy, push)}[CLUSTER]


def _entry(kind: str, pattern: str) -> Any:
    found = [u for u in UNHONOURED[kind] if u.pattern == pattern]
    assert found, f"{kind} {pattern} is no longer listed as unhonoured: drop this check too"
    return found[0]


def test_config_workload_scoped_destination_rule_is_ignored() -> None:
    _entry("DestinationRule", "spec.workloadSelector")
    policy = {"trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 7}}}}
    assert _cluster(policy).circuit_breakers.thresholds[0].max_connections.value == 7
    scoped = _cluster({**policy, "workloadSelector": {"matchLabels": {"app": "app"}}})
    assert scoped.circuit_breakers.thresholds[0].max_connections.value != 7, \
        "workload-scoped DestinationRules work now: remove the spec.workloadSelector UNHONOURED entry"


def test_config_credential_name_sends_plaintext() -> None:
    _entry("DestinationRule", "spec.trafficPolicy.tls.credentialName")
    assert _cluster({"trafficPolicy": {"tls": {"mode": "SIMPLE"}}}).HasField("transport_socket")
    for tls in ({"mode": "SIMPLE", "credentialName": "cert"}, {"mode": "MUTUAL", "credentialName": "cert"}):
        assert not _cluster({"trafficPolicy": {"tls": tls}}).HasField("transport_socket"), \
            f"{tls} originates TLS now: update its UNHONOURED entry"


def test_config_http2_keepalive_is_not_translated() -> None:
    _entry("DestinationRule", "spec.trafficPolicy.connectionPool.http.http2KeepAlive")
    c = _cluster({"trafficPolicy": {"connectionPool": {"http": {
        "h2UpgradePolicy": "UPGRADE", "http2KeepAlive": {"interval": "5s", "timeout": "2s"}}}}})
    opts = hpo_pb2.HttpProtocolOptions()
    assert c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Unpack(opts)
    h2 = opts.explicit_http_config.http2_protocol_options
    assert opts.explicit_http_config.HasField("http2_protocol_options")   # the policy reached the cluster
    assert not h2.HasField("connection_keepalive"), "HTTP/2 keepalive is translated now: update UNHONOURED"
