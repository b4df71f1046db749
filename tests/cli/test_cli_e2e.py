"""End to end through the real ``mizzen`` script: convert the seed's Ingresses, apply them with Services to a
real control plane, send traffic through a real gateway Envoy, and read it back with proxy-status and
proxy-config.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from harness import Mesh, mesh  # noqa: F401  (mesh is a fixture)

pytestmark = pytest.mark.e2e

MIZZEN = str(Path(sys.executable).parent / "mizzen")
FIXTURES = Path(__file__).parent / "fixtures"


def _service(name: str, port: int, target: int) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: demo
spec:
  ports:
  - port: {port}
    targetPort: {target}
    name: http
  selector:
    app: {name}
"""


OUTLIER_DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: demo-ui
  namespace: demo
spec:
  host: demo-ui
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 10s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
"""


async def _cli(server: str, *args: str, token: str | None = None) -> tuple[int, str, str]:
    env = {**os.environ, "MIZZEN_SERVER": server}
    if token:
        env["MIZZEN_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        MIZZEN, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _rows(table: str) -> list[list[str]]:
    return [[c for c in re.split(r" {3,}", line.strip()) if c] for line in table.splitlines() if line.strip()]


async def test_converted_seed_ingresses_serve_through_a_gateway(mesh: Mesh, tmp_path: Path) -> None:  # noqa: F811
    # Workloads are registered here and not removed at teardown: removing them right before the control plane
    # stops races the debouncer's shutdown (Debouncer.close can hang when a push was just triggered).
    order = await mesh.backend("order", namespace="demo", port=18080, register=False)
    receive = await mesh.backend("demo-receive", namespace="demo", port=18081, register=False)
    ui = await mesh.backend("demo-ui", namespace="demo", port=18082, register=False)
    for b in (order, receive, ui):
        mesh.cp.register_workload(b.workload())
    gw = await mesh.gateway()
    server = mesh.cp.http_url

    rc, converted, err = await _cli(server, "convert", "ingress", "-f", str(FIXTURES), token=mesh.cp.token)
    assert rc == 0, err
    (tmp_path / "converted.yaml").write_text(converted)
    (tmp_path / "services.yaml").write_text("---\n".join([
        _service("order", 80, 18080), _service("demo-receive", 8080, 18081), _service("demo-ui", 80, 18082)]))
    # applied with the rest: changing a live EDS cluster's policy later leaves it warming (xDS server issue)
    (tmp_path / "dr.yaml").write_text(OUTLIER_DR)
    rc, out, err = await _cli(server, "apply", "-f", str(tmp_path), token=mesh.cp.token)
    assert rc == 0, err
    assert sorted(out.splitlines()) == [
        "destinationrule.networking.istio.io/demo-ui created",
        "gateway.networking.istio.io/demo-gateway created",
        "service/demo-receive created",
        "service/demo-ui created",
        "service/order created",
        "virtualservice.networking.istio.io/demo-order created",
        "virtualservice.networking.istio.io/demo-receive created",
        "virtualservice.networking.istio.io/demo-ui created",
    ]
    await mesh.wait_synced(timeout=10)

    async with mesh.gateway_client(gw, headers={"Host": "demo.test.com"}) as http:
        for path, backend, seen in [
            ("/orders/42", order, "/orders/42"),
            ("/receiveapi/user/1?x=y", receive, "/user/1?x=y"),
            ("/receiveapi", receive, "/"),
            ("/index.html", ui, "/index.html"),
        ]:
            r = await http.get(path)
            assert r.status_code == 200, (path, r.text)
            assert r.json()["service"] == backend.service, path
            assert r.json()["path"] == seen, path

    rc, out, err = await _cli(server, "proxy-status", token=mesh.cp.token)
    assert rc == 0, err
    rows = _rows(out)
    assert rows[0] == ["NAME", "CDS", "LDS", "EDS", "RDS", "MTLS", "CONNECTED"]
    (row,) = [r for r in rows[1:] if r[0].startswith("istio-ingressgateway")]
    assert [c.split()[0] for c in row[1:5]] == ["SYNCED"] * 4, row
    assert row[5] == "-", row   # a gateway has no inbound listeners

    rc, out, err = await _cli(server, "proxy-config", "routes", "istio-ingressgateway", token=mesh.cp.token)
    assert rc == 0, err
    rows = _rows(out)
    assert rows[0] == ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]
    matches = {(r[3], r[4]) for r in rows[1:] if len(r) == 5}
    assert {("/orders*", "demo-order.demo"), ("/receiveapi/*", "demo-receive.demo"),
            ("/receiveapi", "demo-receive.demo"), ("/*", "demo-ui.demo")} <= matches, out

    rc, out, err = await _cli(server, "proxy-config", "clusters", "istio-ingressgateway", "--fqdn", "demo",
                              token=mesh.cp.token)
    assert rc == 0, err
    clusters = {tuple(r[:4]) for r in _rows(out)[1:]}
    assert ("demo-receive.demo.svc.cluster.local", "8080", "-", "outbound") in clusters, out
    assert ("order.demo.svc.cluster.local", "80", "-", "outbound") in clusters, out

    rc, out, err = await _cli(server, "proxy-config", "endpoints", "istio-ingressgateway",
                              "--cluster", "demo-receive", token=mesh.cp.token)
    assert rc == 0, err
    assert _rows(out)[1][:2] == [f"{receive.ip}:18081", "HEALTHY"], out

    # Envoy's own view through its agent's admin proxy (host:port, no scheme): healthy, not ejected
    assert gw.admin_proxy_url is not None
    rc, out, err = await _cli(server, "proxy-config", "endpoints", "istio-ingressgateway", "--cluster",
                              "demo-receive", "--admin", gw.admin_proxy_url.removeprefix("http://"),
                              token=mesh.cp.token)
    assert rc == 0, err
    assert _rows(out)[1] == [f"{receive.ip}:18081", "HEALTHY", "OK",
                             "outbound|8080||demo-receive.demo.svc.cluster.local"], out

    rc, out, err = await _cli(server, "proxy-config", "listeners", "istio-ingressgateway", "--port", "8080",
                              token=mesh.cp.token)
    assert rc == 0, err
    assert any(r[1] == "8080" and r[3] == "Route: http.8080" for r in _rows(out)[1:]), out

    # outlier detection (like the seed's ratings rule): one 5xx ejects demo-ui; Envoy's view shows it
    rc, out, err = await _cli(server, "proxy-config", "clusters", "istio-ingressgateway", "--fqdn", "demo-ui",
                              token=mesh.cp.token)
    want = ["demo-ui.demo.svc.cluster.local", "80", "-", "outbound", "EDS", "demo-ui.demo"]
    assert _rows(out)[1] == want, out
    ui.fail(503)
    async with mesh.gateway_client(gw, headers={"Host": "demo.test.com"}) as http:
        assert (await http.get("/")).status_code == 503
    rc, out, err = await _cli(server, "proxy-config", "endpoints", "istio-ingressgateway",
                              "--cluster", "demo-ui", "--admin", str(gw.admin_socket), token=mesh.cp.token)
    assert rc == 0, err
    assert _rows(out)[1][:3] == [f"{ui.ip}:18082", "HEALTHY", "FAILED"], out
