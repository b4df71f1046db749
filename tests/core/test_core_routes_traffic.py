"""Generated routes behave in a real Envoy: a gateway listener with the seed's bookinfo + section 5 routes
and a sidecar listener with bookinfo's jason/abort routes, every cluster pointing at a local upstream that
reports which cluster it is and the path it received. Checks redirect Location, rewrites, merges, 404s,
header routing and fault aborts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format
from routes_testkit import (
    BOOKINFO_NET,
    SEED,
    bookinfo_registry,
    configs_from_file,
    fqdn,
    gateway_proxy,
    http_service,
    push_of,
    sidecar,
)
from test_core_routes_envoy import _bootstrap, _clusters_of

from mizzen.agent.binary import envoy_binary
from mizzen.core.routes import build_routes

IP = "127.0.77.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((IP, 0))
        return int(s.getsockname()[1])


def _configs() -> list[route_pb2.RouteConfiguration]:
    reg = bookinfo_registry(http_service("order", ports=(80,)), http_service("demo-receive", ports=(8080,)),
                            http_service("demo-ui", ports=(80,)))
    gw = configs_from_file(SEED / "bookinfo-gateway.yaml")
    gw = [c for c in gw if c.kind == "Gateway"]
    configs = gw + configs_from_file(SEED / "bookinfo-vs-redirect-rewrite.yaml", created=1)
    for i, f in enumerate(("demo-gateway", "demo-ui-vs", "demo-order-vs", "demo-receive-vs")):
        configs += configs_from_file(SEED / f"{f}.yaml", created=10 + i)
    configs += configs_from_file(BOOKINFO_NET / "virtual-service-reviews-jason-v2-v3.yaml", created=20)
    configs += configs_from_file(BOOKINFO_NET / "virtual-service-ratings-test-abort.yaml", created=21)
    push = push_of(configs, reg)
    return build_routes(gateway_proxy(), push, ["http.8080"]) + build_routes(sidecar(), push, ["9080"])


@contextlib.asynccontextmanager
async def _upstreams(clusters: list[str]) -> AsyncIterator[dict[str, int]]:
    """One HTTP port per cluster; each answers with its cluster name, the path and the Host it received."""
    ports = {c: _free_port() for c in clusters}
    runner_list = []
    for cluster, port in ports.items():
        async def handle(req: web.Request, cluster: str = cluster) -> web.Response:
            return web.json_response({"cluster": cluster, "path": req.path_qs, "host": req.host})
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, IP, port).start()
        runner_list.append(runner)
    try:
        yield ports
    finally:
        for r in runner_list:
            await r.cleanup()


def _point_clusters(bootstrap_json: dict, ports: dict[str, int]) -> None:  # type: ignore[type-arg]
    for c in bootstrap_json["staticResources"]["clusters"]:
        sa = c["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"]["socketAddress"]
        sa["address"], sa["portValue"] = IP, ports[c["name"]]


async def _wait_listening(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 15.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, (proc.stderr.read() if proc.stderr else b"").decode()[-3000:]
        try:
            _, w = await asyncio.open_connection(IP, port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    pytest.fail("envoy listener did not come up")


async def test_routes_in_a_live_envoy(tmp_path: Path) -> None:
    configs = _configs()
    clusters = sorted(set().union(*map(_clusters_of, configs)))
    async with _upstreams(clusters) as ports:
        boot = json.loads(json_format.MessageToJson(_bootstrap(configs)))
        _point_clusters(boot, ports)
        gw_port, sc_port = _free_port(), _free_port()
        for lis, port in zip(boot["staticResources"]["listeners"], (gw_port, sc_port), strict=True):
            lis["address"]["socketAddress"].update({"address": IP, "portValue": port})
        boot["admin"]["address"]["socketAddress"]["address"] = IP
        path = tmp_path / "envoy.json"
        path.write_text(json.dumps(boot))
        proc = subprocess.Popen([str(envoy_binary()), "-c", str(path), "--disable-hot-restart", "--log-level",
                                 "warn", "--base-id", str(_free_port())],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            await _wait_listening(gw_port, proc)
            await _wait_listening(sc_port, proc)
            async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
                await _check_gateway(client, f"http://{IP}:{gw_port}")
                await _check_sidecar(client, f"http://{IP}:{sc_port}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _check_gateway(client: httpx.AsyncClient, base: str) -> None:
    pp = f"outbound|9080||{fqdn('productpage')}"
    host = {"Host": "bookinfo.kubeasy.com"}
    r = await client.get(f"{base}/yunwei", headers=host)
    assert r.status_code == 301
    assert r.headers["location"] == "http://blog.csdn.net/weixin_43279138?type=blog"
    r = await client.get(f"{base}/", headers=host)
    assert r.status_code == 200
    assert r.json() == {"cluster": pp, "path": "/productpage", "host": "bookinfo.kubeasy.com"}
    r = await client.get(f"{base}/static/x.css", headers={"Host": "bookinfo.kubeasy.com:30080"})
    assert r.json()["path"] == "/static/x.css" and r.json()["cluster"] == pp
    assert (await client.get(f"{base}/nothing", headers=host)).status_code == 404
    assert (await client.get(f"{base}/productpage", headers={"Host": "unknown.example"})).status_code == 404

    demo = {"Host": "demo.test.com"}
    r = await client.get(f"{base}/receiveapi/orders/7?x=1", headers=demo)
    assert r.json() == {"cluster": f"outbound|8080||{fqdn('demo-receive')}", "path": "/orders/7?x=1",
                        "host": "demo.test.com"}
    r = await client.get(f"{base}/orders/7", headers=demo)
    assert r.json()["cluster"] == f"outbound|80||{fqdn('order')}" and r.json()["path"] == "/orders/7"
    r = await client.get(f"{base}/index.html", headers=demo)
    assert r.json()["cluster"] == f"outbound|80||{fqdn('demo-ui')}"


async def _check_sidecar(client: httpx.AsyncClient, base: str) -> None:
    reviews, ratings = fqdn("reviews"), fqdn("ratings")
    r = await client.get(f"{base}/reviews/0", headers={"Host": "reviews:9080", "end-user": "jason"})
    assert r.json()["cluster"] == f"outbound|9080|v2|{reviews}"
    r = await client.get(f"{base}/reviews/0", headers={"Host": "reviews"})
    assert r.json()["cluster"] == f"outbound|9080|v3|{reviews}"
    r = await client.get(f"{base}/ratings/0", headers={"Host": f"{ratings}:9080", "end-user": "jason"})
    assert r.status_code == 500 and r.text == "fault filter abort"
    r = await client.get(f"{base}/ratings/0", headers={"Host": "ratings.bookinfo"})
    assert r.json()["cluster"] == f"outbound|9080|v1|{ratings}"
    r = await client.get(f"{base}/details/0", headers={"Host": "details"})
    assert r.json()["cluster"] == f"outbound|9080||{fqdn('details')}"
    r = await client.get(f"{base}/", headers={"Host": "elsewhere.example"})
    assert r.json()["cluster"] == "PassthroughCluster"
