"""``--mesh-config``: Istio's MeshConfig access-log fields (also from an IstioOperator's spec.meshConfig or
the istio ConfigMap), with one-line errors for bad files and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mizzen.core.mesh import MeshConfig, OutboundPolicy, with_mesh_file

# the seed's IstioOperator: JSON access logs to the proxies' stdout
OPERATOR = {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
            "spec": {"profile": "demo", "meshConfig": {"accessLogFile": "/dev/stdout",
                                                       "accessLogEncoding": "JSON"}}}


def test_mesh_config_forms() -> None:
    m = with_mesh_file(MeshConfig(), OPERATOR)
    assert (m.access_log_file, m.access_log_encoding) == ("/dev/stdout", "JSON")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio", "namespace": "istio-system"},
          "data": {"mesh": "accessLogFile: /tmp/x.log\naccessLogFormat: '%RESPONSE_CODE%'\n"
                           "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"}}
    m = with_mesh_file(MeshConfig(allow_external_bind=True), cm)
    assert (m.access_log_file, m.access_log_format, m.outbound_policy, m.allow_external_bind) == (
        "/tmp/x.log", "%RESPONSE_CODE%", OutboundPolicy.REGISTRY_ONLY, True)
    m = with_mesh_file(MeshConfig(), {"accessLogEncoding": "text", "unknownField": 1})
    assert m.access_log_encoding == "TEXT"
    with pytest.raises(ValueError, match="accessLogEncoding: want TEXT or JSON"):
        with_mesh_file(MeshConfig(), {"accessLogEncoding": "XML"})
    with pytest.raises(ValueError, match="accessLogFile must be a string"):
        with_mesh_file(MeshConfig(), {"accessLogFile": 3})


@pytest.mark.parametrize(("text", "message"), [
    ("accessLogEncoding: XML\n", "accessLogEncoding: want TEXT or JSON, got 'XML'"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("a: [\n", "--mesh-config"),
])
def test_bad_mesh_config_is_one_error_without_traceback(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "mesh.yaml"
    f.write_text(text)
    r = subprocess.run([sys.executable, "-m", "mizzen.controlplane", "--mesh-config", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2                      # a usage error, as typer reports bad parameters
    assert "Traceback" not in r.stderr and message in " ".join(r.stderr.split()), r.stderr
