"""Config lifecycle end to end: a live VirtualService change reaches Envoy within a second without failing
in-flight requests; invalid config is refused at apply and changes nothing; config Envoy NACKs leaves traffic
on the last good config with the NACK visible; a control-plane restart drops no request and proxies resync.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from e2e_world import NS, World, bookinfo_world, seed

from harness import Mesh, eventually
from mizzen.config.errors import ConfigError
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions

pytestmark = pytest.mark.e2e

REVIEWS = "http://reviews:9080/reviews/0"
ALL_TO = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
"""


async def syncz(mesh: Mesh) -> dict[str, Any]:
    async with mesh.api_client() as api:
        return {p["proxy"]: p for p in (await api.get("/debug/syncz")).json()}


def versions(proxy_status: dict[str, Any]) -> dict[str, str]:
    return {t: s["acked"] for t, s in proxy_status["types"].items()}


# Envoy's counters of listeners and clusters it replaced or removed (a replaced listener drains its
# connections, a replaced cluster its connection pools)
CHANGES = (r"/stats?filter=^(listener_manager\.listener_(modified|in_place_updated|removed)"
           r"|cluster_manager\.cluster_(modified|removed))$")


async def changes(world: World) -> str:
    return await world.client.admin_get(CHANGES)


async def traffic(world: World, stop: asyncio.Event, log: list[tuple[float, str]],
                  max_requests: int = 3000, max_seconds: float = 20.0,
                  errors: list[str] | None = None) -> None:
    """Requests back to back through the client sidecar until ``stop`` (bounded in count and time); each
    failed request's time and exception in ``errors``."""
    errors = [] if errors is None else errors
    deadline = time.monotonic() + max_seconds
    async with world.http(timeout=5) as c:
        for _ in range(max_requests):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                r = await c.get(REVIEWS)
                outcome = r.json()["version"] if r.status_code == 200 else str(r.status_code)
                log.append((time.monotonic(), outcome))
            except httpx.HTTPError as e:
                log.append((time.monotonic(), type(e).__name__))
                errors.append(f"{time.monotonic():.3f} {type(e).__name__}: {e!r}")


async def test_live_change_within_a_second_without_failed_requests(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    await mesh.apply_yaml(seed("reviews-dr.yaml"), namespace=NS)
    await mesh.apply_yaml(ALL_TO.format(subset="v1"), namespace=NS)
    await mesh.wait_synced()
    stop, log = asyncio.Event(), list[tuple[float, str]]()
    task = asyncio.create_task(traffic(world, stop, log))
    await asyncio.sleep(0.5)
    applied_at = time.monotonic()
    await mesh.apply_yaml(ALL_TO.format(subset="v2"), namespace=NS)

    async def switched() -> None:
        assert any(v == "v2" for _, v in log[-3:])
    await eventually(switched, timeout=3)
    await asyncio.sleep(0.3)
    stop.set()
    await task
    first_v2 = min(t for t, v in log if v == "v2")
    outcomes = Counter(v for _, v in log)
    assert set(outcomes) == {"v1", "v2"}, outcomes          # no failed request during the change
    assert first_v2 - applied_at < 1.0, first_v2 - applied_at
    assert all(v == "v2" for t, v in log if t > first_v2 + 0.1)


async def test_invalid_config_is_refused_and_changes_nothing(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    await mesh.apply_yaml(seed("reviews-dr.yaml"), namespace=NS)
    await mesh.apply_yaml(ALL_TO.format(subset="v1"), namespace=NS)
    await mesh.wait_synced()
    before = versions((await syncz(mesh))[world.client.spec.node_id])
    stored = mesh.cp.store.snapshot().version

    bad = seed("reviews-80v1-20v2.yaml").replace("weight: 20", "weight: 120")
    with pytest.raises(ConfigError) as e:
        await mesh.apply_yaml(bad, namespace=NS, file="reviews-80v1-20v2.yaml")
    assert "reviews-80v1-20v2.yaml:18: VirtualService/reviews: spec.http[0].route[1].weight" in str(e.value)
    async with mesh.api_client() as api:     # and through the API, all or nothing with a good object
        good_dr = seed("reviews-dr.yaml").replace("name: reviews", "name: reviews-copy")
        r = await api.post("/apis/apply", json={"namespace": NS, "documents": [
            {"file": "ok.yaml", "text": good_dr}, {"file": "bad.yaml", "text": bad}]})
    assert r.status_code == 422
    assert any("bad.yaml:18: VirtualService/reviews" in err["text"] for err in r.json()["errors"]), r.json()
    await mesh.wait_synced()
    assert mesh.cp.store.snapshot().version == stored
    assert mesh.cp.store.get("DestinationRule", NS, "reviews-copy") is None
    assert versions((await syncz(mesh))[world.client.spec.node_id]) == before
    assert await world.versions(REVIEWS, 10) == Counter({"v1": 10})


async def test_nacked_config_keeps_last_good_and_shows_the_reason(mesh: Mesh, tmp_path: Any) -> None:
    world = await bookinfo_world(mesh)
    gw = await mesh.gateway(gateway_ports={80: 8080, 443: 8443})
    await mesh.apply_yaml(seed("bookinfo-gateway.yaml"), namespace=NS)
    await mesh.wait_synced()
    host = {"Host": "bookinfo.kubeasy.com"}
    async with mesh.gateway_client(gw) as c:
        assert (await c.get("/productpage", headers=host)).status_code == 200

    # Certificate files live on the gateway's host, not the control plane's: only Envoy can tell they are
    # missing, and it rejects the listener (a NACK).
    missing = tmp_path / "missing"
    https = seed("bookinfo-gateway.yaml").split("---")[0] + f"""
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["bookinfo.kubeasy.com"]
    tls: {{mode: SIMPLE, serverCertificate: {missing}/cert.pem, privateKey: {missing}/key.pem}}
"""
    await mesh.apply_yaml(https, namespace=NS)
    node = gw.spec.node_id

    async def nacked() -> dict[str, Any]:
        lds = (await syncz(mesh))[node]["types"]["LDS"]
        assert lds["status"] == "NACKED", lds
        return lds
    lds = await eventually(nacked, timeout=5)
    assert "Failed to load" in lds["nack"]["message"] and str(missing) in lds["nack"]["message"], lds
    async with mesh.api_client() as api:
        push = (await api.get("/debug/push_status")).json()
    assert node in str(push) and str(missing) in str(push)
    # the last good config keeps serving
    async with mesh.gateway_client(gw) as c:
        for _ in range(5):
            assert (await c.get("/productpage", headers=host)).status_code == 200
    assert world.backends["productpage-v1"].requests >= 6

    # fixing the config clears the NACK
    await mesh.apply_yaml(seed("bookinfo-gateway.yaml"), namespace=NS)
    await mesh.wait_synced()
    assert (await syncz(mesh))[node]["types"]["LDS"]["status"] == "SYNCED"


async def test_control_plane_restart_drops_no_request(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    await mesh.apply_yaml(seed("reviews-dr.yaml"), namespace=NS)
    await mesh.apply_yaml(ALL_TO.format(subset="v3"), namespace=NS)
    await mesh.wait_synced()
    node = world.client.spec.node_id
    before = versions((await syncz(mesh))[node])
    changed_before = await changes(world)
    xds_port = mesh.cp.xds_port

    stop, log, errors = asyncio.Event(), list[tuple[float, str]](), list[str]()
    task = asyncio.create_task(traffic(world, stop, log, errors=errors))
    await asyncio.sleep(0.3)
    phases = [f"{time.monotonic():.3f} stopping the control plane"]
    await mesh.cp.stop()
    phases.append(f"{time.monotonic():.3f} stopped")
    await asyncio.sleep(1.0)                      # proxies run on their last config meanwhile
    cp2 = ControlPlane(ControlPlaneOptions(state_dir=mesh.cp.options.state_dir, xds_port=xds_port,
                                           http_port=0))
    try:
        await cp2.start()
        phases.append(f"{time.monotonic():.3f} new control plane started")
        mesh.cp = cp2                             # syncz() and wait_synced() now ask the new one

        async def resynced() -> None:
            assert node in cp2.status.connected(), cp2.status.connected()
        await eventually(resynced, timeout=15)
        await cp2.wait_synced([node], timeout=10)
        await asyncio.sleep(0.3)
        stop.set()
        await task
        outcomes = Counter(v for _, v in log)
        phases.append(f"{time.monotonic():.3f} resynced")
        # not a single failure across the restart (on failure: when each failed, against the phases)
        assert outcomes and set(outcomes) == {"v3"}, (outcomes, errors, phases)
        # same config, same content-hash versions: nothing had to change in Envoy, and nothing did meanwhile
        # (neither the stopping control plane nor the new one sent other listeners or clusters)
        assert versions((await syncz(mesh))[node]) == before
        assert await changes(world) == changed_before, phases
    finally:
        stop.set()
        await cp2.stop()
