"""Seed 4.7-4.9 and Istio's resilience features end to end: circuit breaking (connection pool overflow),
outlier detection, delay and abort faults, retries and timeouts, through a real sidecar Envoy.
"""

from __future__ import annotations

import time

import pytest
from e2e_world import NS, bookinfo_world, seed

import seed_checks
from harness import Mesh, eventually
from mizzen.loadgen import FAULT_ABORT, FROM_APP, NO_HEALTHY_UPSTREAM, OVERFLOW, run_load

pytestmark = pytest.mark.e2e

RATINGS = "http://ratings:9080/ratings/0"
DETAILS = "http://details:9080/details/0"


def vs(name: str, http_rule: str) -> str:
    """A VirtualService for ``name`` with one HTTP rule (YAML flow mapping) routing to it."""
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [{name}]
  http:
  - {http_rule}
"""


async def test_circuit_breaking_seed_4_7(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    ratings = world.backends["ratings-v1"]
    ratings.delay_s = 0.05                 # requests overlap, as under fortio against a real service
    await mesh.apply_yaml(seed("ratings-dr.yaml"), namespace=NS)  # maxConnections 3, pending 1
    await mesh.wait_synced()
    proxy = f"http://{world.client.spec.ip}:15080"

    one = await run_load(RATINGS, concurrency=1, total=20, proxy=proxy, deadline=30)
    assert one.codes == {200: 20}, one.summary()

    many = await run_load(RATINGS, concurrency=20, total=20, proxy=proxy, deadline=30)
    assert many.total == 20
    # x-envoy-overloaded: overflow 503s
    seed_checks.circuit_broken(many.codes, many.flags["overflow"], many.summary())
    assert many.reasons[503] == {OVERFLOW: many.codes[503]}, many.summary()
    assert f"[overflow (UO): {many.codes[503]}]" in many.summary()
    stats = await world.client.admin_get(
        "/stats?filter=ratings.bookinfo.svc.cluster.local.upstream_rq_pending_overflow")
    assert any(int(line.rsplit(":", 1)[1]) > 0 for line in stats.splitlines() if "overflow" in line), stats


async def test_load_tells_503_causes_apart_as_envoy_reports_them(mesh: Mesh) -> None:
    """Defect 4: 503s from no healthy upstream (UH), a fault abort (FI) and the application itself are told
    apart from overflows (UO, above) by what the real sidecar Envoy puts in its replies."""
    world = await bookinfo_world(mesh)
    proxy = f"http://{world.client.spec.ip}:15080"
    # a subset no pod carries: Envoy has no endpoint for the cluster and answers 503 UH
    await mesh.apply_yaml("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  subsets: [{name: v9, labels: {version: v9}}]
""", namespace=NS)
    await mesh.apply_yaml(vs("ratings", "{route: [{destination: {host: ratings, subset: v9}}]}"),
                          namespace=NS)
    await mesh.wait_synced()
    uh = await run_load(RATINGS, concurrency=2, total=6, proxy=proxy, deadline=30)
    assert uh.codes == {503: 6} and uh.reasons[503] == {NO_HEALTHY_UPSTREAM: 6}, uh.summary()
    assert "Code 503 : 6 (100.0 %) [no healthy upstream (UH): 6]" in uh.summary()

    await mesh.apply_yaml(vs("ratings", "{fault: {abort: {httpStatus: 503, percentage: {value: 100}}}, "
                                        "route: [{destination: {host: ratings}}]}"), namespace=NS)
    await mesh.wait_synced()
    fi = await run_load(RATINGS, total=3, proxy=proxy, deadline=30)
    assert fi.reasons[503] == {FAULT_ABORT: 3}, fi.summary()

    await mesh.apply_yaml(vs("ratings", "{retries: {attempts: 0}, route: [{destination: {host: ratings}}]}"),
                          namespace=NS)
    await mesh.wait_synced()
    world.backends["ratings-v1"].fail(503, times=2)
    app = await run_load(RATINGS, total=3, proxy=proxy, deadline=30)
    assert app.codes == {503: 2, 200: 1} and app.reasons[503] == {FROM_APP: 2}, app.summary()


async def test_outlier_detection_ejects_a_failing_endpoint(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    good = world.backends["ratings-v1"]
    bad = await mesh.backend("ratings", "v1", namespace=NS, port=9080, pod="ratings-v1-bad")
    bad.fail(500)
    await mesh.apply_yaml("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m, maxEjectionPercent: 100}
""", namespace=NS)
    await mesh.wait_synced()
    async with world.http() as c:
        first = [(await c.get(RATINGS)).status_code for _ in range(4)]
        assert 500 in first                 # the bad endpoint answered once before being ejected
        good.reset_counts()
        bad.reset_counts()
        later = [(await c.get(RATINGS)).status_code for _ in range(20)]
    assert later == [200] * 20 and bad.requests == 0 and good.requests == 20
    clusters = await world.client.admin_get("/clusters")
    assert f"{bad.ip}:9080::health_flags::/failed_outlier_check" in clusters


async def test_delay_fault(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    # the seed's 4.8 rule with 1 s instead of 5 s, to keep the suite quick
    await mesh.apply_yaml(seed("details-delay.yaml").replace("fixedDelay: 5s", "fixedDelay: 1s"),
                          namespace=NS)
    await mesh.wait_synced()
    async with world.http() as c:
        t0 = time.monotonic()
        r = await c.get(DETAILS)
        elapsed = time.monotonic() - t0
    seed_checks.delayed(r.status_code, elapsed, 1.0)
    assert r.json()["service"] == "details"


async def test_abort_fault_all_and_half(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    await mesh.apply_yaml(seed("details-abort.yaml"), namespace=NS)          # seed 4.9: 400 at 100%
    await mesh.wait_synced()
    async with world.http() as c:
        r = await c.get(DETAILS)
    seed_checks.aborted(r.status_code, r.text)
    assert world.backends["details-v1"].requests == 0

    await mesh.apply_yaml(seed("details-abort.yaml").replace("value: 100", "value: 50"), namespace=NS)
    await mesh.wait_synced()
    seed_checks.aborted_half(await world.versions(DETAILS, 200))   # ~50% of 200


async def test_retries_turn_a_first_503_into_200(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    ratings = world.backends["ratings-v1"]
    await mesh.apply_yaml(vs("ratings", "{retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}, "
                                        "route: [{destination: {host: ratings}}]}"), namespace=NS)
    await mesh.wait_synced()
    ratings.fail(503, times=1)
    async with world.http() as c:
        r = await c.get(RATINGS)
    assert r.status_code == 200 and ratings.requests == 2

    await mesh.apply_yaml(vs("ratings", "{retries: {attempts: 0}, route: [{destination: {host: ratings}}]}"),
                          namespace=NS)
    await mesh.wait_synced()
    ratings.reset_counts()
    ratings.fail(503, times=1)
    async with world.http() as c:
        r = await c.get(RATINGS)
    assert r.status_code == 503 and ratings.requests == 1       # attempts 0 disables retries


async def test_timeout_turns_a_slow_call_into_504(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    world.backends["ratings-v1"].delay_s = 2.0
    await mesh.apply_yaml(vs("ratings", "{timeout: 0.5s, route: [{destination: {host: ratings}}]}"),
                          namespace=NS)
    await mesh.wait_synced()

    async def times_out() -> None:
        async with world.http() as c:
            t0 = time.monotonic()
            r = await c.get(RATINGS)
            assert r.status_code == 504 and r.text == "upstream request timeout", r.text
            assert time.monotonic() - t0 < 1.5
    await eventually(times_out, timeout=5)
