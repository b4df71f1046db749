"""Seed 4.4-4.6 and 5.3 end to end: subsets, all-to-v1, the 80/20 canary, A/B by header, load-balancing
policies and the east-west handler rule, through a real sidecar Envoy fed by the real control plane.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from e2e_world import NS, bookinfo_world, sample, seed

import seed_checks
from harness import Mesh, eventually

pytestmark = pytest.mark.e2e

REVIEWS = "http://reviews:9080/reviews/0"


async def test_no_virtual_service_spreads_over_all_versions(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    seen = await world.versions(REVIEWS, 30)
    assert set(seen) == {"v1", "v2", "v3"}, seen


async def test_all_v1_then_80_20_canary(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    await mesh.apply_yaml(sample("destination-rule-all.yaml"), namespace=NS)
    await mesh.apply_yaml(sample("virtual-service-all-v1.yaml"), namespace=NS)
    await mesh.wait_synced()
    seed_checks.only(await world.versions(REVIEWS, 30), "v1", 30)

    await mesh.apply_yaml(seed("reviews-80v1-20v2.yaml"), namespace=NS)
    await mesh.wait_synced()
    seed_checks.canary_80_20(await world.versions(REVIEWS, 1000))     # 80% +- 5% over 1,000 requests


async def test_end_user_jason_ab_routing(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    await mesh.apply_yaml(seed("reviews-dr.yaml"), namespace=NS)
    # the seed's listing (4.5): jason -> v3, everyone else -> v2
    await mesh.apply_yaml(seed("reviews-jasonv3.yaml"), namespace=NS)
    await mesh.wait_synced()
    seed_checks.only(await world.versions(REVIEWS, 10, {"end-user": "jason"}), "v3", 10)
    seed_checks.only(await world.versions(REVIEWS, 10, {"end-user": "mary"}), "v2", 10)
    seed_checks.only(await world.versions(REVIEWS, 10), "v2", 10)
    # Istio's sample is the mirror image: jason -> v2, everyone else -> v3
    await mesh.apply_yaml(sample("virtual-service-reviews-jason-v2-v3.yaml"), namespace=NS)
    await mesh.wait_synced()
    assert await world.versions(REVIEWS, 5, {"end-user": "jason"}) == Counter({"v2": 5})
    assert await world.versions(REVIEWS, 5) == Counter({"v3": 5})


async def test_round_robin_alternates_over_three_endpoints(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    await mesh.apply_yaml("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
""", namespace=NS)
    await mesh.wait_synced()
    order: list[str] = []
    async with world.http() as c:
        for _ in range(9):
            order.append((await c.get(REVIEWS)).json()["version"])
    seed_checks.round_robin(order)     # every window of three consecutive answers holds each endpoint once
    assert set(order) == {"v1", "v2", "v3"}, order


@pytest.mark.parametrize("policy, envoy_lb", [("RANDOM", "RANDOM"), ("LEAST_REQUEST", "LEAST_REQUEST"),
                                              ("ROUND_ROBIN", None)])
async def test_lb_policy_reaches_the_cluster(mesh: Mesh, policy: str, envoy_lb: str | None) -> None:
    world = await bookinfo_world(mesh)
    await mesh.apply_yaml(seed("reviews-dr-random.yaml").replace("RANDOM", policy), namespace=NS)
    await mesh.wait_synced()
    async with mesh.api_client() as api:
        dump = (await api.get("/debug/config_dump", params={"proxyID": "productpage-v1-abc"})).json()
    clusters = {c["name"]: c for c in dump["CDS"]}
    for subset in ("", "v1", "v2", "v3"):
        c = clusters[f"outbound|9080|{subset}|reviews.bookinfo.svc.cluster.local"]
        assert c.get("lbPolicy") == envoy_lb, c        # ROUND_ROBIN is Envoy's default (omitted in JSON)
    # and Envoy itself runs it: the admin config dump carries the same policy
    async with world.http() as c:
        assert (await c.get(REVIEWS)).status_code == 200
    admin = json.loads(await world.client.admin_get("/config_dump?resource=dynamic_active_clusters"))
    running = {c["cluster"]["name"]: c["cluster"].get("lb_policy", "ROUND_ROBIN") for c in admin["configs"]}
    for subset in ("", "v1", "v2", "v3"):
        assert running[f"outbound|9080|{subset}|reviews.bookinfo.svc.cluster.local"] == policy, running


async def test_east_west_handler_subset_v1(mesh: Mesh) -> None:
    """Seed 5.3: DestinationRule subset v1 + VirtualService for the in-mesh ``handler`` service."""
    await mesh.apply_yaml("""
apiVersion: v1
kind: Service
metadata: {name: handler}
spec: {ports: [{port: 80, name: http, targetPort: 8080}], selector: {app: demo-handler}}
""", namespace="demo")
    client = await mesh.sidecar("demo", "demo-order-abc", {"app": "demo-order", "version": "v1"})
    v1 = await mesh.backend("handler", "v1", namespace="demo", port=8080,
                            labels={"app": "demo-handler", "version": "v1"})
    v2 = await mesh.backend("handler", "v2", namespace="demo", port=8080,
                            labels={"app": "demo-handler", "version": "v2"})
    await mesh.apply_yaml(seed("demo-handler-dr.yaml"), namespace="demo")
    await mesh.wait_synced()

    async def only_v1() -> None:
        async with mesh.client_via(client) as c:
            for _ in range(6):
                r = await c.get("http://handler/api/handle")       # port 80 -> targetPort 8080
                assert r.status_code == 200 and r.json()["version"] == "v1", r.text
    await eventually(only_v1)
    assert v1.requests >= 6 and v2.requests == 0
