"""One duration parser for validation and translation: Go's time.ParseDuration as Istio's CRD rules use it
(µ U+00B5 and μ U+03BC both mean micro); every unit validation accepts translates to the same value."""

from __future__ import annotations

import pytest

from mizzen.config.durations import parse_duration, seconds
from mizzen.config.loader import load_text
from mizzen.config.model import ConfigSnapshot
from mizzen.core.clusters import build_clusters
from mizzen.core.proxy import Proxy, ProxyType, node_id
from mizzen.core.push_context import PushContext
from mizzen.registry.model import Protocol, RegistrySnapshot, Service, ServicePort

HOST = "reviews.shop.svc.cluster.local"
DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {{connectTimeout: "{timeout}"}}
"""


@pytest.mark.parametrize(("text", "secs"), [
    ("3s", 3.0), ("300ms", 0.3), ("1.5h", 5400.0), ("1h30m", 5400.0), (".5s", 0.5), ("5.s", 5.0),
    ("-2s", -2.0), ("0", 0.0), ("3000000us", 3.0), ("3000000\u00b5s", 3.0), ("3000000\u03bcs", 3.0),
    ("1500000000ns", 1.5), ("1m0.5s", 60.5),
])
def test_go_durations(text: str, secs: float) -> None:
    assert parse_duration(text) == pytest.approx(secs)
    assert seconds(text) == pytest.approx(secs)


@pytest.mark.parametrize("text", ["", "3", "s", "3 s", "3sec", "1d", "3S", "--1s", "1s2"])
def test_malformed_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_non_string_forms() -> None:
    assert seconds(None) is None and seconds("") is None and seconds(True) is None
    assert seconds(2) == 2.0 and seconds({"seconds": 1, "nanos": 500_000_000}) == 1.5


@pytest.mark.parametrize("micro", ["\u00b5", "\u03bc", "u"])
def test_micro_connect_timeout_validates_and_translates_to_3s(micro: str) -> None:
    loaded = load_text(DR.format(timeout=f"3000000{micro}s"), "dr.yaml")
    assert not loaded.errors, loaded.errors
    svc = Service(hostname=HOST, namespace="shop", name="reviews",
                  ports=(ServicePort("http", 9080, Protocol.HTTP),))
    push = PushContext.build(ConfigSnapshot.of(loaded.configs), RegistrySnapshot(services=(svc,)))
    proxy = Proxy(id=node_id(ProxyType.SIDECAR, "127.0.30.1", "app-1", "shop"), type=ProxyType.SIDECAR,
                  ip="127.0.30.1", namespace="shop")
    cluster = {c.name: c for c in build_clusters(proxy, push)}[f"outbound|9080||{HOST}"]
    assert (cluster.connect_timeout.seconds, cluster.connect_timeout.nanos) == (3, 0)
