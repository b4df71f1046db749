"""Rules of the Kubernetes registry without a cluster: Istio's health status of an EndpointSlice endpoint, the
mesh config ConfigMap's ``mesh`` document overlaid on the control plane's MeshConfig, and what a re-list does
to the registry."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from mizzen.config.model import Config, ConfigSnapshot
from mizzen.core.mesh import MeshConfig, OutboundPolicy
from mizzen.kube.meshconfig import MeshConfigError, parse_mesh_config
from mizzen.kube.registry_source import KubeRegistrySource, slice_health
from mizzen.registry.model import SliceHealth
from mizzen.registry.registry import Registry


@pytest.mark.parametrize(("conditions", "health"), [
    (None, SliceHealth.HEALTHY),                                           # unset: ready
    ({"ready": True, "serving": True, "terminating": False}, SliceHealth.HEALTHY),
    ({"ready": False, "serving": True, "terminating": True}, SliceHealth.DRAINING),
    ({"ready": False, "serving": False, "terminating": True}, SliceHealth.TERMINATING),
    ({"ready": False}, SliceHealth.DRAINING),                              # Istio: unset serving/terminating
    ({"ready": False, "serving": False}, SliceHealth.TERMINATING),
    ({"ready": False, "serving": False, "terminating": False}, SliceHealth.UNHEALTHY),
    ({"ready": False, "serving": True, "terminating": False}, SliceHealth.UNHEALTHY),
])
def test_slice_health_is_istios(conditions: object, health: SliceHealth) -> None:
    assert slice_health(conditions) is health


def test_mesh_config_fields_overlay_the_base() -> None:
    base = MeshConfig(allow_external_bind=True)
    mesh, ignored = parse_mesh_config("""
connectTimeout: 2.5s
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
defaultHttpRetryPolicy: {attempts: 4, retryOn: 5xx}
accessLogFile: /dev/stdout
accessLogEncoding: JSON
trustDomain: example.org
enableTracing: true
defaultConfig: {discoveryAddress: istiod:15012}
""", base)
    assert mesh.connect_timeout_s == 2.5 and mesh.outbound_policy is OutboundPolicy.REGISTRY_ONLY
    assert (mesh.default_retry_attempts, mesh.default_retry_on) == (4, "5xx")
    assert (mesh.access_log_file, mesh.access_log_encoding) == ("/dev/stdout", "JSON")
    assert mesh.trust_domain == "example.org"
    assert mesh.allow_external_bind and mesh.root_namespace == "istio-system"   # kept from the base
    assert ignored == ["enableTracing"]
    assert parse_mesh_config("", base) == (base, [])


@pytest.mark.parametrize(("text", "why"), [
    ("connectTimeout: [oops", "not YAML (line 1)"),
    ("- a list", "expected a mapping"),
    ("connectTimeout: -3s", "connectTimeout: '-3s' is not a positive duration"),
    ("outboundTrafficPolicy: {mode: SOMETIMES}",
     "outboundTrafficPolicy.mode: want ALLOW_ANY or REGISTRY_ONLY, got 'SOMETIMES'"),
    ("defaultHttpRetryPolicy: {attempts: many}", "defaultHttpRetryPolicy.attempts"),
    ("enableAutoMtls: maybe", "enableAutoMtls: expected true or false"),
    ("trustDomain: [a]", "trustDomain must be a string"),
])
def test_bad_mesh_config_is_refused_in_one_line(text: str, why: str) -> None:
    with pytest.raises(MeshConfigError) as e:
        parse_mesh_config(text, MeshConfig())
    assert why in str(e.value) and "\n" not in str(e.value)


def _slice(name: str, ips: list[str], ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips]}


async def test_a_relist_drops_what_disappeared_while_the_watch_was_down() -> None:
    """After a 410 (or a restart) the reflector lists again and hands over the whole list: a slice missing
    from it, or an endpoint gone from a slice, leaves the registry (no stale endpoint), and the push names
    exactly the service."""
    registry = Registry()
    registry.set_configs(ConfigSnapshot.of([Config(
        kind="Service", api_version="v1", name="web", namespace="shop",
        spec={"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]})]))
    pushes: list[frozenset[str]] = []
    api = ApiClient()
    try:
        source = KubeRegistrySource(api, registry, on_endpoints=lambda hosts, _r, _w: pushes.append(hosts))
        host = "web.shop.svc.cluster.local"

        def addresses() -> list[str]:
            return [e.address for e in registry.snapshot().endpoints_for(host, 80)]

        source.slices.replace([_slice("web-a", ["10.1.0.1", "10.1.0.2"]), _slice("web-b", ["10.1.0.3"])])
        assert addresses() == ["10.1.0.1", "10.1.0.2", "10.1.0.3"] and pushes == [{host}]
        source.slices.replace([_slice("web-a", ["10.1.0.1"])])           # the re-list after a 410
        assert addresses() == ["10.1.0.1"] and pushes == [{host}, {host}]
        source.slices.replace([_slice("web-a", ["10.1.0.1"])])           # nothing changed: no push
        assert len(pushes) == 2
        source.slices.upsert(_slice("web-a", ["10.1.0.1"], ready=False))   # not ready, not terminating
        assert addresses() == []
    finally:
        await api.close()
