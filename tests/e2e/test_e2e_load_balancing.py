"""Load balancing end to end through a real sidecar Envoy: consistentHash by header (sticky per value, spread
across values), LEAST_REQUEST steering around a slow endpoint, and localityLbSetting failover (traffic stays
in the proxy's locality until outlier detection ejects its endpoints, then fails over, and comes back).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from harness import Backend, Mesh, eventually
from mizzen.agent.envoy import Agent

pytestmark = pytest.mark.e2e

NS = "lb"
# Outlier ejection time in the locality failover test. Envoy applies a health change that follows another
# within common_lb_config.update_merge_window (1 s by default, which Istio keeps) only at the end of that
# window: the first ejection reaches the load balancer at once, the second up to 1 s later, and only then does
# all traffic fail over. The ejection must outlast that plus the requests that check it, on a loaded machine.
EJECTION_S = 6
WEB = "http://web:9080/"
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 9080, name: http}], selector: {app: web}}
"""


def dr(traffic_policy: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web}}
spec:
  host: web
  trafficPolicy: {traffic_policy}
"""


async def world(mesh: Mesh, n: int, locality: str = "", localities: tuple[str, ...] = ()
                ) -> tuple[Agent, list[Backend]]:
    await mesh.apply_yaml(SERVICE, namespace=NS)
    backends = [await mesh.backend("web", f"v{i}", namespace=NS, port=9080, labels={"app": "web"},
                                   locality=localities[i] if localities else "")
                for i in range(n)]
    client = await mesh.sidecar(NS, "client-pod", {"app": "client"}, locality=locality)
    return client, backends


async def pods(mesh: Mesh, client: Agent, n: int, headers: dict[str, str] | None = None) -> list[str]:
    """``n`` requests one after the other; the answering pod of each (or ``HTTP <code>``)."""
    out = []
    async with mesh.client_via(client, timeout=5) as c:
        for _ in range(n):
            r = await c.get(WEB, headers=headers)
            out.append(r.json()["pod"] if r.status_code == 200 else f"HTTP {r.status_code} {r.json()['pod']}")
    return out


async def test_consistent_hash_by_header(mesh: Mesh) -> None:
    client, backends = await world(mesh, 4)
    await mesh.apply_yaml(dr("{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}"), namespace=NS)
    await mesh.wait_synced()

    async def hashed() -> None:
        assert len(set(await pods(mesh, client, 20, {"x-user": "alice"}))) == 1
    await eventually(hashed)
    first = {}
    for i in range(20):
        user = f"user-{i}"
        seen = await pods(mesh, client, 3 if i else 20, {"x-user": user})
        assert len(set(seen)) == 1, (user, seen)              # one value always lands on one endpoint
        first[user] = seen[0]
    spread = Counter(first.values())
    assert len(spread) >= 3, spread                           # different values spread over the endpoints
    assert set(spread) <= {b.pod for b in backends}


async def test_consistent_hash_by_cookie_sets_and_honours_it(mesh: Mesh) -> None:
    client, _ = await world(mesh, 4)
    cookie = "{name: session, path: /, ttl: 60s}"
    await mesh.apply_yaml(dr(f"{{loadBalancer: {{consistentHash: {{httpCookie: {cookie}}}}}}}"), namespace=NS)
    await mesh.wait_synced()
    async with mesh.client_via(client, timeout=5) as c:
        async def cookie_set() -> httpx.Response:
            r: httpx.Response = await c.get(WEB)
            assert r.status_code == 200 and "session=" in r.headers.get("set-cookie", ""), r.headers
            return r
        first = await eventually(cookie_set)
        cookie = first.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        assert "Max-Age=60" in first.headers["set-cookie"] and "Path=/" in first.headers["set-cookie"]
        c.cookies.clear()
        # with the cookie Envoy handed out, every request lands where the first one did, without a new cookie
        for _ in range(20):
            r = await c.get(WEB, headers={"Cookie": f"session={cookie}"})
            assert r.json()["pod"] == first.json()["pod"] and "set-cookie" not in r.headers
            c.cookies.clear()
        spread = {(await c.get(WEB, headers={"Cookie": f"session=s{i}"})).json()["pod"] for i in range(12)}
    assert len(spread) >= 2, spread


async def test_least_request_avoids_a_slow_endpoint(mesh: Mesh) -> None:
    client, backends = await world(mesh, 5)
    slow = backends[0]
    slow.delay_s = 0.3
    await mesh.apply_yaml(dr("{loadBalancer: {simple: LEAST_REQUEST}}"), namespace=NS)
    await mesh.wait_synced()
    async with mesh.client_via(client, timeout=5) as c:
        await eventually(lambda: _ok(c))

        async def worker() -> list[str]:
            return [(await c.get(WEB)).json()["pod"] for _ in range(20)]
        results = await asyncio.gather(*(worker() for _ in range(6)))
    seen = Counter(p for r in results for p in r)
    assert sum(seen.values()) == 120
    # round robin would give the slow endpoint exactly a fifth (24); least-request (power of two choices)
    # sends it much less, because it nearly always has more requests in flight than the other pick
    assert seen[slow.pod] <= 16, seen


async def _ok(c: object) -> None:
    r = await c.get(WEB)  # type: ignore[attr-defined]
    assert r.status_code == 200


async def test_locality_failover_with_outlier_detection(mesh: Mesh) -> None:
    client, backends = await world(mesh, 3, locality="us/a", localities=("us/a", "us/a", "us/b"))
    local, remote = backends[:2], backends[2]
    local_pods = {b.pod for b in local}
    await mesh.wait_synced()
    # without outlier detection Istio applies no locality priorities: every endpoint gets traffic
    await eventually(lambda: _all_seen(mesh, client, {b.pod for b in backends}))

    # the checks judge Envoy's state (ejections_active) rather than how many requests fit in a time window
    await mesh.apply_yaml(dr(f"""
    loadBalancer: {{simple: ROUND_ROBIN, localityLbSetting: {{enabled: true}}}}
    outlierDetection: {{consecutive5xxErrors: 1, interval: 0.1s, baseEjectionTime: {EJECTION_S}s,
                       maxEjectionPercent: 100}}
"""), namespace=NS)
    await mesh.wait_synced()

    async def stays_local() -> None:
        assert set(await pods(mesh, client, 20)) == local_pods
    await eventually(stays_local)

    # each failing local endpoint answers one 500 and is ejected (consecutive5xxErrors: 1); until both are,
    # requests reach us/a (500s) or already spill over to us/b, nothing else
    for b in local:
        b.fail(500)
    seen: list[str] = []
    t0 = time.monotonic()
    while await _ejected(client) < 2 and len(seen) < 50 and time.monotonic() - t0 < 10:
        seen += await pods(mesh, client, 1)
    assert await _ejected(client) == 2, seen
    assert {p for p in seen if p != remote.pod} == {f"HTTP 500 {p}" for p in local_pods}, seen
    assert await _stats(client, "ejections_enforced_consecutive_5xx") == 2
    # healed but still ejected: a request that still reached us/a would now show its pod, not a 500
    for b in local:
        b.heal()
    await eventually(lambda: _failed_over(mesh, client, remote.pod), timeout=EJECTION_S - 1)

    # after the ejection time the (healed) local endpoints return: traffic goes back to the proxy's locality
    async def back_home() -> None:
        assert await _ejected(client) == 0
        assert set(await pods(mesh, client, 10)) == local_pods
    await eventually(back_home, timeout=EJECTION_S + 4, interval=0.2)


async def _failed_over(mesh: Mesh, client: Agent, remote_pod: str) -> None:
    """Ten requests in a row, all while both local endpoints stay ejected (the healed endpoints are not
    ejected again, so two ejections after the requests means two during them), all answered by us/b."""
    seen = await pods(mesh, client, 10)
    assert await _ejected(client) == 2, "an ejection expired before the check ran; raise EJECTION_S"
    assert seen == [remote_pod] * 10, seen


async def _ejected(client: Agent) -> int:
    return await _stats(client, "ejections_active")


async def _all_seen(mesh: Mesh, client: Agent, want: set[str]) -> None:
    assert set(await pods(mesh, client, 15)) == want


async def _stats(client: Agent, name: str) -> int:
    stat = f"cluster.outbound|9080||web.lb.svc.cluster.local.outlier_detection.{name}"
    values = dict(line.rsplit(": ", 1) for line in (await client.admin_get("/stats")).splitlines()
                  if ": " in line)
    return int(values[stat])


async def test_locality_distribute_weights(mesh: Mesh) -> None:
    client, backends = await world(mesh, 3, locality="us/a/r1", localities=("us/a/r1", "us/b/r1", "us/b/r2"))
    await mesh.apply_yaml(dr("""
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        enabled: true
        distribute: [{from: "us/a/*", to: {"us/a/*": 75, "us/b/*": 25}}]
"""), namespace=NS)
    await mesh.wait_synced()

    async def weighted() -> None:
        seen = Counter(await pods(mesh, client, 200))
        assert 130 <= seen[backends[0].pod] <= 170, seen            # 75% of 200 stays in us/a
        assert seen[backends[1].pod] > 10 and seen[backends[2].pod] > 10, seen   # us/b's 25% over both
    await eventually(weighted)
