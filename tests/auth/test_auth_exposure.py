"""A Gateway bound outside loopback would serve the mesh on the host's network: refused at apply with the
field path unless the mesh opts in (then a warning), and the demo's own gateway host follows the same rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.mesh import MeshConfig

MIZZEN = str(Path(sys.executable).parent / "mizzen")
HOST = "127.0.96.2"
GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    bind: 127.0.0.7
  - port: {number: 8081, name: http2, protocol: HTTP}
    hosts: ["*"]
    bind: "%s"
"""


async def _apply(allow: bool, bind: str) -> tuple[int, dict[str, object], int]:
    opts = ControlPlaneOptions(xds_host=HOST, xds_port=0, http_host=HOST, http_port=0,
                               mesh=MeshConfig(allow_external_bind=allow))
    async with ControlPlane(opts) as cp, httpx.AsyncClient(
            base_url=cp.http_url, trust_env=False, headers={"Authorization": f"Bearer {cp.token}"}) as api:
        r = await api.post("/apis/apply", json={"documents": [{"file": "gw.yaml", "text": GATEWAY % bind}]})
        return r.status_code, r.json(), len(cp.store)


@pytest.mark.parametrize("bind", ["0.0.0.0", "192.168.1.20", "::"])
async def test_external_bind_is_refused_with_the_field_path(bind: str) -> None:
    status, body, stored = await _apply(False, bind)
    assert status == 422 and stored == 0, body
    (err,) = body["errors"]  # type: ignore[misc]
    assert err["text"].startswith("gw.yaml:12: Gateway/public: spec.servers[1].bind: "), err
    assert "outside loopback" in err["text"] and "--allow-external-bind" in err["text"]


async def test_loopback_binds_need_no_opt_in_and_opt_in_warns() -> None:
    status, body, stored = await _apply(False, "127.0.0.8")
    assert status == 200 and stored == 1 and body["warnings"] == [], body
    status, body, stored = await _apply(True, "0.0.0.0")
    assert status == 200 and stored == 1, body
    texts = [w["text"] for w in body["warnings"]]  # type: ignore[union-attr]
    assert any("spec.servers[1].bind: warning: 0.0.0.0 is outside loopback" in t for t in texts), texts


def test_demo_refuses_an_external_gateway_host(tmp_path: Path) -> None:
    r = subprocess.run([MIZZEN, "demo", "--host", "0.0.0.0", "--state-dir", str(tmp_path), "--no-bookinfo"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "error: --host 0.0.0.0 is outside loopback" in r.stderr and "--allow-external-bind" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    r = subprocess.run([MIZZEN, "demo", "--host", "gateway.lan", "--state-dir", str(tmp_path),
                        "--no-bookinfo"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "--host 'gateway.lan' is not an IP address" in r.stderr, r.stderr
