"""``mizzen simulate`` through the real console script against an in-process control plane with a connected
sidecar Envoy: the compact answer, the why-trail (-v), JSON (-o json) and the errors."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from simulate_kit import NET

from harness import Mesh, mesh  # noqa: F401  (mesh is a fixture)

pytestmark = pytest.mark.e2e
MIZZEN = str(Path(sys.executable).parent / "mizzen")
NS = "bookinfo"
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
"""


async def _cli(server: str, *args: str, token: str | None = None) -> tuple[int, str, str]:
    env = {**os.environ, "MIZZEN_SERVER": server}
    if token:
        env["MIZZEN_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(MIZZEN, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_simulate_command(mesh: Mesh) -> None:  # noqa: F811
    await mesh.apply_yaml(SERVICE, namespace=NS)
    await mesh.sidecar(NS, "productpage-v1-cli", {"app": "productpage", "version": "v1"})
    v2 = await mesh.backend("reviews", "v2", namespace=NS, port=9080)
    await mesh.backend("reviews", "v3", namespace=NS, port=9080)
    # Istio's reviews DestinationRule: subsets v1-v3, loadBalancer RANDOM
    for f in (NET / "destination-rule-reviews.yaml", NET / "virtual-service-reviews-jason-v2-v3.yaml"):
        await mesh.apply_yaml(f.read_text(), namespace=NS, file=str(f))
    await mesh.wait_synced()
    server = mesh.cp.http_url

    rc, out, err = await _cli(server, "simulate", "productpage-v1-cli", "http://reviews:9080/reviews/0",
                              "-H", "end-user: jason", token=mesh.cp.token)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[1] == "FORWARDED"
    assert "virtual host: reviews.bookinfo.svc.cluster.local:9080" in lines
    assert any(ln.startswith("route: #0") and "VirtualService bookinfo/reviews" in ln for ln in lines)
    assert "-> outbound|9080|v2|reviews.bookinfo.svc.cluster.local  weight 100 (100%)" in lines
    assert "   subset v2, EDS, RANDOM, DestinationRule bookinfo/reviews" in lines
    assert f"   endpoint {v2.ip}:9080  HEALTHY" in lines
    assert "why:" not in out

    rc, out, err = await _cli(server, "simulate", "productpage-v1", "http://reviews:9080/reviews/0", "-v",
                              token=mesh.cp.token)
    assert rc == 0, err
    assert "subset v3" in out
    assert "route 0 skipped: header end-user exact 'jason': fails (header not present)" in out
    assert "route 1 matched: prefix / matches /reviews/0" in out

    rc, out, err = await _cli(server, "simulate", "productpage", "http://reviews:9080/", "-X", "POST",
                              "-H", "End-User: jason", "-o", "json", token=mesh.cp.token)
    assert rc == 0, err
    result = json.loads(out)
    assert result["request"]["method"] == "POST"
    assert result["destinations"][0]["subset"] == "v2"

    async with mesh.api_client() as api:      # the API's own checks, one-line JSON errors
        for params, status, error in (
                ({"url": "http://reviews:9080/"}, 400, "query parameter 'proxyID' is required"),
                ({"proxyID": "productpage"}, 400, "query parameter 'url' is required"),
                ({"proxyID": "productpage", "url": "/", "header": "bad"}, 400,
                 "header 'bad': want 'Name: value'"),
                ({"proxyID": "productpage", "url": "/", "port": "x"}, 400, "port 'x' is not a number"),
                ({"proxyID": "productpage", "url": "/", "direction": "up"}, 400, "direction must be one of"),
                ({"proxyID": "nope", "url": "/"}, 404, "no proxy 'nope'")):
            r = await api.get("/debug/simulate", params=params)
            assert r.status_code == status and error in r.json()["error"], (params, r.text)
        r = await api.post("/debug/simulate", json={"proxyID": "productpage", "url": "http://reviews:9080/",
                                                    "header": ["end-user: jason"], "method": "PUT"})
        assert r.status_code == 200 and r.json()["destinations"][0]["subset"] == "v2"
        assert r.json()["request"]["method"] == "PUT"

    rc, out, err = await _cli(server, "simulate", "nope", "http://reviews:9080/", token=mesh.cp.token)
    assert rc == 1 and 'no proxy matches "nope"' in err
    rc, out, err = await _cli(server, "simulate", "productpage", "http://reviews:9080/", "-H", "bad",
                              token=mesh.cp.token)
    assert rc == 1 and "header 'bad': want 'Name: value'" in err
    rc, out, err = await _cli(server, "simulate", "productpage", "http://reviews:9080/", "--port", "1",
                              "--direction", "inbound", token=mesh.cp.token)
    assert rc == 1 and "CANNOT SIMULATE: no inbound HTTP listener for port(s) [1]" in out


SEED_GATEWAY = Path(__file__).resolve().parents[1] / "fixtures" / "seed" / "bookinfo-gateway.yaml"


async def test_simulate_gateway_on_a_remapped_port_and_bad_urls(mesh: Mesh) -> None:  # noqa: F811
    """A gateway whose Gateway port 80 listens on 18080 (a demo started with ``--port 18080``): simulate
    finds that listener through the proxy's port map; a bad URL is one line and exit 1, never a traceback."""
    await mesh.apply_yaml(SEED_GATEWAY.read_text(), namespace=NS, file=str(SEED_GATEWAY))
    gw = await mesh.gateway(gateway_ports={80: 18080, 443: 18443})
    await mesh.wait_synced()
    server = mesh.cp.http_url
    rc, out, err = await _cli(server, "simulate", "istio-ingressgateway",
                              "http://bookinfo.kubeasy.com/productpage", "-o", "json", token=mesh.cp.token)
    assert rc == 0, (out, err)
    result = json.loads(out)
    assert result["listener"]["port"] == 18080 and result["status"] == "route", result["why"]
    # and Envoy serves that route there: routed, so no 404 NR (no productpage backend here: a 503)
    async with mesh.gateway_client(gw, port=18080) as c:
        r = await c.get("/productpage", headers={"Host": "bookinfo.kubeasy.com"})
    assert r.status_code == 503, r.text
    for url, reason in (("http://[::1", "Invalid IPv6 URL"), ("ftp://x/", "scheme 'ftp' is not simulated")):
        rc, out, err = await _cli(server, "simulate", "istio-ingressgateway", url, token=mesh.cp.token)
        assert rc == 1 and reason in err and "Traceback" not in err, (out, err)
