"""PushContext.virtual_services_for: exportTo visibility and Istio's order for sidecars and gateways (private
to the proxy's namespace, then exported to it by name, then public; oldest first in each group)."""

from __future__ import annotations

from typing import Any

import pytest

from mizzen.config.model import Config, ConfigSnapshot
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext, vs_visibility
from mizzen.registry.model import RegistrySnapshot


def vs(name: str, ns: str, created: float, **spec: Any) -> Config:
    return Config(kind="VirtualService", api_version="networking.istio.io/v1", name=name, namespace=ns,
                  spec={"hosts": ["reviews.bookinfo.svc.cluster.local"], **spec}, created=created)


def proxy(ns: str) -> Proxy:
    return Proxy.from_node(f"sidecar~127.0.0.9~client-1.{ns}~{ns}.svc.cluster.local", {"NAMESPACE": ns})


def names_for(push: PushContext, ns: str, gateway: str = "mesh") -> list[str]:
    return [f"{v.config.namespace}/{v.config.name}" for v in push.virtual_services_for(proxy(ns), gateway)]


@pytest.mark.parametrize(("export_to", "owner", "viewer", "want"), [
    (None, "a", "b", 2), ([], "a", "a", 2), (["*"], "a", "b", 2), (["*", "."], "a", "a", 2),
    (["."], "a", "a", 0), (["a"], "a", "a", 0), (["."], "a", "b", None),
    (["b"], "a", "b", 1), ([".", "b"], "a", "b", 1), ([".", "b"], "a", "a", 0), (["b"], "a", "c", None),
    (["~"], "a", "a", None),
])
def test_visibility(export_to: Any, owner: str, viewer: str, want: int | None) -> None:
    assert vs_visibility(export_to, owner, viewer) == want


def test_private_then_exported_then_public_oldest_first() -> None:
    configs = ConfigSnapshot.of([
        vs("public-old", "bookinfo", 1.0),
        vs("public-new", "other", 2.0, exportTo=["*"]),
        vs("to-guests", "bookinfo", 3.0, exportTo=["guests"]),
        vs("guests-private", "guests", 4.0, exportTo=["."]),
        vs("guests-public", "guests", 5.0),
        vs("bookinfo-private", "bookinfo", 0.5, exportTo=["."]),
        vs("gw-only", "guests", 0.1, gateways=["ingress"], exportTo=["."]),
    ])
    push = PushContext.build(configs, RegistrySnapshot())
    assert names_for(push, "guests") == ["guests/guests-private", "bookinfo/to-guests", "bookinfo/public-old",
                                         "other/public-new", "guests/guests-public"]
    assert names_for(push, "bookinfo") == ["bookinfo/bookinfo-private", "bookinfo/public-old",
                                           "other/public-new", "guests/guests-public"]
    # gateways: exportTo is relative to the gateway proxy's namespace, as in Istio
    assert names_for(push, "istio-system", "guests/ingress") == []
    assert names_for(push, "guests", "guests/ingress") == ["guests/gw-only"]
