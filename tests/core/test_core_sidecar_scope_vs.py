"""Sidecar egress hosts import VirtualServices by the VS's own namespace and hosts (Istio's
SelectVirtualServices): ``bookinfo/*`` imports VSs declared in bookinfo, not VSs elsewhere about bookinfo."""

from __future__ import annotations

from typing import Any

import pytest

from mizzen.config.model import Config, ConfigSnapshot
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext
from mizzen.core.sidecar_scope import imports_host, imports_virtual_service
from mizzen.registry.model import RegistrySnapshot

REVIEWS = "reviews.bookinfo.svc.cluster.local"


@pytest.mark.parametrize(("hosts", "config_ns", "host", "want"), [
    (["*/*"], "ops", REVIEWS, True),
    (["bookinfo/*"], "bookinfo", REVIEWS, True),
    (["bookinfo/*"], "ops", REVIEWS, False),          # the VS's namespace must be imported
    (["./*"], "guests", "sleep.guests.svc.cluster.local", True),
    (["./*"], "bookinfo", REVIEWS, False),
    (["*/reviews.bookinfo.svc.cluster.local"], "ops", REVIEWS, True),
    (["ops/reviews"], "ops", "reviews.ops.svc.cluster.local", True),   # short name in the named namespace
    (["*/*.example.com"], "ops", "api.example.com", True),
    (["*/api.example.com"], "ops", "*.example.com", True),          # wildcard VS host meets an imported host
    (["~/*"], "ops", REVIEWS, False),
])
def test_imports_host(hosts: list[str], config_ns: str, host: str, want: bool) -> None:
    assert imports_host(hosts, "guests", config_ns, host, "cluster.local") is want


def config(kind: str, name: str, ns: str, **spec: Any) -> Config:
    return Config(kind=kind, api_version="networking.istio.io/v1", name=name, namespace=ns, spec=spec)


def proxy(ns: str) -> Proxy:
    return Proxy.from_node(f"sidecar~127.0.0.9~sleep-1.{ns}~{ns}.svc.cluster.local", {"NAMESPACE": ns})


def test_imports_virtual_service_follows_the_proxys_sidecar() -> None:
    sidecar = config("Sidecar", "default", "guests", egress=[{"hosts": ["./*", "bookinfo/*"]}])
    owner_vs = config("VirtualService", "reviews", "bookinfo", hosts=["reviews"])
    ops_vs = config("VirtualService", "reviews-ops", "ops", hosts=[REVIEWS])
    push = PushContext.build(ConfigSnapshot.of([sidecar, owner_vs, ops_vs]), RegistrySnapshot())
    guest = proxy("guests")
    other = proxy("other")
    by_name = {vs.config.name: vs for vs in push.virtual_services}
    assert imports_virtual_service(guest, push, by_name["reviews"])
    assert not imports_virtual_service(guest, push, by_name["reviews-ops"])
    assert imports_virtual_service(other, push, by_name["reviews-ops"])       # no Sidecar: */*
