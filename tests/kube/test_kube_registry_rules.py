"""Pure rules of the Kubernetes registry (no cluster): Istio's health status of an EndpointSlice endpoint, and
the mesh config ConfigMap's ``mesh`` document overlaid on the control plane's MeshConfig."""

from __future__ import annotations

import pytest

from mizzen.core.mesh import MeshConfig, OutboundPolicy
from mizzen.kube.meshconfig import MeshConfigError, parse_mesh_config
from mizzen.kube.registry_source import slice_health
from mizzen.registry.model import SliceHealth


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
accessLogEncoding: json
trustDomain: example.org
enableTracing: true
defaultConfig: {discoveryAddress: istiod:15012}
""", base)
    assert mesh.connect_timeout_s == 2.5 and mesh.outbound_policy is OutboundPolicy.REGISTRY_ONLY
    assert (mesh.default_retry_attempts, mesh.default_retry_on) == (4, "5xx")
    assert (mesh.access_log_file, mesh.access_log_encoding) == ("/dev/stdout", "JSON")
    assert mesh.trust_domain == "example.org"
    assert mesh.allow_external_bind and mesh.root_namespace == "istio-system"   # kept from the base
    assert ignored == ["defaultConfig", "enableTracing"]
    assert parse_mesh_config("", base) == (base, [])


@pytest.mark.parametrize(("text", "why"), [
    ("connectTimeout: [oops", "not YAML (line 1)"),
    ("- a list", "expected a mapping"),
    ("connectTimeout: -3s", "connectTimeout: '-3s' is not a positive duration"),
    ("outboundTrafficPolicy: {mode: SOMETIMES}", "outboundTrafficPolicy.mode: 'SOMETIMES'"),
    ("defaultHttpRetryPolicy: {attempts: many}", "defaultHttpRetryPolicy.attempts"),
    ("enableAutoMtls: maybe", "enableAutoMtls: expected true or false"),
    ("accessLogEncoding: XML", "accessLogEncoding: 'XML' is not TEXT or JSON"),
])
def test_bad_mesh_config_is_refused_in_one_line(text: str, why: str) -> None:
    with pytest.raises(MeshConfigError) as e:
        parse_mesh_config(text, MeshConfig())
    assert why in str(e.value) and "\n" not in str(e.value)
