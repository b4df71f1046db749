"""Registry-side kinds end to end, through the real control plane and real Envoys: ServiceEntry (STATIC, DNS,
NONE, workloadSelector over WorkloadEntries), a VirtualService + DestinationRule on a ServiceEntry host, a
WorkloadEntry behind a Kubernetes Service, outboundTrafficPolicy ALLOW_ANY vs REGISTRY_ONLY (mesh-wide and
per-namespace Sidecar), and endpoints following workloads as they are registered and removed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from harness import Backend, Mesh, alloc_ip, eventually, free_port
from mizzen.agent.envoy import Agent
from mizzen.core.mesh import MeshConfig, OutboundPolicy

pytestmark = pytest.mark.e2e

NS = "shop"


async def get(mesh: Mesh, client: Agent, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with mesh.client_via(client, timeout=5) as c:
        return await c.get(url, headers=headers)


async def answers(mesh: Mesh, client: Agent, url: str, service: str) -> httpx.Response:
    """Eventually a 200 from the backend standing in for ``service``."""
    async def ok() -> httpx.Response:
        r = await get(mesh, client, url)
        assert r.status_code == 200, (url, r.status_code, r.text)
        assert r.json()["service"] == service, r.json()
        return r
    return await eventually(ok)


async def cluster_requests(agent: Agent, cluster: str) -> int:
    """Envoy's ``upstream_rq_total`` counter for one cluster (0 when the cluster has none yet)."""
    stats = await agent.admin_get("/stats?filter=upstream_rq_total$")
    for line in stats.splitlines():
        name, _, value = line.partition(": ")
        if name == f"cluster.{cluster}.upstream_rq_total":
            return int(value)
    return 0


@pytest.fixture
async def localhost_backend() -> AsyncIterator[Backend]:
    """A backend on 127.0.0.1 (a free port), for DNS resolution of ``localhost``; not registered."""
    b = Backend(service="dns-ext", version="v1", namespace=NS, pod="dns-ext", ip="127.0.0.1",
                port=free_port("127.0.0.1"))
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


# --- ServiceEntry -------------------------------------------------------------------------------------------
def external_se(name: str, host: str, resolution: str, addresses: list[tuple[str, int, dict[str, str]]],
                port: int = 80) -> str:
    eps = "".join(f"\n  - address: {a}\n    ports: {{http: {p}}}\n    labels: {labels or {'x': 'y'}}"
                  for a, p, labels in addresses)
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{host}]
  location: MESH_EXTERNAL
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  resolution: {resolution}
  endpoints:{eps}
"""


async def test_service_entry_static_external_host_by_name(mesh: Mesh) -> None:
    ext = await mesh.backend("httpbin", namespace=NS, port=8000, register=False)
    client = await mesh.sidecar(NS, "sleep-1", {"app": "sleep"})
    se = external_se("httpbin-ext", "httpbin.example.test", "STATIC", [(ext.ip, ext.port, {})])
    await mesh.apply_yaml(se.replace("  location:", "  addresses: [240.240.0.1]\n  location:"), namespace=NS)
    await mesh.wait_synced()
    r = await answers(mesh, client, "http://httpbin.example.test/get?a=1", "httpbin")
    await answers(mesh, client, "http://240.240.0.1/by-vip", "httpbin")       # its address (VIP) too
    assert r.json()["path"] == "/get?a=1" and r.json()["headers"]["Host"] == "httpbin.example.test"
    assert await cluster_requests(client, "outbound|80||httpbin.example.test") >= 1
    # a client in another namespace sees it too (exportTo defaults to every namespace)
    other = await mesh.sidecar("elsewhere", "sleep-2", {"app": "sleep"})
    await answers(mesh, other, "http://httpbin.example.test/", "httpbin")


async def test_service_entry_dns_resolves_endpoint_names(mesh: Mesh, localhost_backend: Backend) -> None:
    client = await mesh.sidecar(NS, "sleep-1", {"app": "sleep"})
    await mesh.apply_yaml(external_se("dns-ext", "api.dns.test", "DNS",
                                      [("localhost", localhost_backend.port, {})]), namespace=NS)
    await mesh.wait_synced()
    r = await answers(mesh, client, "http://api.dns.test/status", "dns-ext")
    assert r.json()["path"] == "/status"
    assert localhost_backend.requests >= 1
    dump = await client.admin_get("/clusters")
    # the STRICT_DNS cluster resolved the endpoint name to the loopback address
    assert f"outbound|80||api.dns.test::127.0.0.1:{localhost_backend.port}::" in dump

    # no endpoints: a DNS ServiceEntry resolves its own host name
    port = localhost_backend.port
    await mesh.apply_yaml(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: loopback}}
spec:
  hosts: [localhost]
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  resolution: DNS
""", namespace=NS)
    await mesh.wait_synced()
    await answers(mesh, client, f"http://localhost:{port}/self", "dns-ext")
    assert await cluster_requests(client, f"outbound|{port}||localhost") >= 1


async def test_virtual_service_and_subsets_on_a_service_entry_host(mesh: Mesh) -> None:
    v1 = await mesh.backend("httpbin", "v1", namespace=NS, port=8000, register=False)
    v2 = await mesh.backend("httpbin", "v2", namespace=NS, port=8000, register=False)
    client = await mesh.sidecar(NS, "sleep-1", {"app": "sleep"})
    se = external_se("httpbin-ext", "httpbin.example.test", "STATIC",
                     [(v1.ip, v1.port, {"version": "v1"}), (v2.ip, v2.port, {"version": "v2"})])
    await mesh.apply_yaml(se + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin-ext}
spec:
  host: httpbin.example.test
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin-ext}
spec:
  hosts: [httpbin.example.test]
  http:
  - match: [{headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: httpbin.example.test, subset: v2}}]
  - route:
    - {destination: {host: httpbin.example.test, subset: v1}, weight: 50}
    - {destination: {host: httpbin.example.test, subset: v2}, weight: 50}
""", namespace=NS)
    await mesh.wait_synced()
    await answers(mesh, client, "http://httpbin.example.test/", "httpbin")
    seen: Counter[str] = Counter()
    canary: Counter[str] = Counter()
    async with mesh.client_via(client, timeout=5) as c:
        for _ in range(40):
            seen[(await c.get("http://httpbin.example.test/")).json()["version"]] += 1
        for _ in range(10):
            canary[(await c.get("http://httpbin.example.test/", headers={"x-canary": "yes"})).json()
                   ["version"]] += 1
    assert set(seen) == {"v1", "v2"}, seen            # 50/50 over 40 requests: both with p > 1 - 2^-39
    assert canary == Counter({"v2": 10})
    assert await cluster_requests(client, "outbound|80|v2|httpbin.example.test") >= 10


WORKLOAD_ENTRY = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}}}
spec:
  address: {address}
  labels: {{app: {app}, version: {version}}}
  serviceAccount: vm-sa
"""


async def test_service_entry_selects_workload_entries(mesh: Mesh) -> None:
    vm1 = await mesh.backend("legacy", "v1", namespace=NS, port=7070, register=False)
    vm2 = await mesh.backend("legacy", "v2", namespace=NS, port=7070, register=False)
    client = await mesh.sidecar(NS, "sleep-1", {"app": "sleep"})
    await mesh.apply_yaml(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: legacy}}
spec:
  hosts: [legacy.vms.test]
  location: MESH_INTERNAL
  ports: [{{number: 7070, name: http, protocol: HTTP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: legacy}}}}
---
{WORKLOAD_ENTRY.format(name="vm-1", address=vm1.ip, app="legacy", version="v1")}
---
{WORKLOAD_ENTRY.format(name="vm-2", address=vm2.ip, app="legacy", version="v2")}
---
{WORKLOAD_ENTRY.format(name="vm-other", address=alloc_ip(), app="unrelated", version="v1")}
""", namespace=NS)
    await mesh.wait_synced()
    await answers(mesh, client, "http://legacy.vms.test:7070/", "legacy")
    seen: Counter[str] = Counter()
    async with mesh.client_via(client, timeout=5) as c:
        for _ in range(20):
            seen[(await c.get("http://legacy.vms.test:7070/")).json()["version"]] += 1
    assert set(seen) == {"v1", "v2"}, seen            # round robin over both selected entries
    clusters = await client.admin_get("/clusters")
    eps = {line.split("::")[1] for line in clusters.splitlines()
           if line.startswith("outbound|7070||legacy.vms.test::") and "::health_flags::" in line}
    assert eps == {f"{vm1.ip}:7070", f"{vm2.ip}:7070"}, eps     # the unrelated entry is not selected


async def test_workload_entry_behind_a_kubernetes_service(mesh: Mesh) -> None:
    vm = await mesh.backend("ratings-vm", namespace=NS, port=8080, register=False)
    client = await mesh.sidecar(NS, "sleep-1", {"app": "sleep"})
    # the VM serves the Service's "http" port on 8080: a WorkloadEntry's ports are keyed by service port name
    entry = WORKLOAD_ENTRY.format(name="ratings-vm", address=vm.ip, app="ratings", version="vm") + \
        "  ports: {http: 8080}\n"
    await mesh.apply_yaml(f"""
apiVersion: v1
kind: Service
metadata: {{name: ratings}}
spec: {{ports: [{{port: 9080, name: http}}], selector: {{app: ratings}}}}
---
{entry}
""", namespace=NS)
    await mesh.wait_synced()
    for url in ("http://ratings:9080/ratings/1", f"http://ratings.{NS}:9080/",
                f"http://ratings.{NS}.svc.cluster.local:9080/"):
        r = await answers(mesh, client, url, "ratings-vm")
    assert r.json()["ip"] == vm.ip and vm.requests >= 3
    # the VM's entry is removed: the Service has no endpoint left
    await mesh.delete_yaml(entry, namespace=NS)
    await mesh.wait_synced()

    async def gone() -> None:
        assert (await get(mesh, client, "http://ratings:9080/")).status_code == 503
    await eventually(gone)


async def test_service_entry_resolution_none_passes_through_to_the_address(mesh: Mesh) -> None:
    db = await mesh.backend("legacy-db", namespace=NS, port=5480, register=False)
    client = await mesh.sidecar(NS, "sleep-1", {"app": "sleep"})
    await mesh.apply_yaml(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: legacy-db}}
spec:
  hosts: [db.legacy.test]
  addresses: ["{db.ip}/32"]
  location: MESH_EXTERNAL
  ports: [{{number: 5480, name: http, protocol: HTTP}}]
  resolution: NONE
""", namespace=NS)
    await mesh.wait_synced()
    await answers(mesh, client, f"http://{db.ip}:5480/q", "legacy-db")
    # it went through the ServiceEntry's ORIGINAL_DST cluster, not the catch-all PassthroughCluster
    assert await cluster_requests(client, "outbound|5480||db.legacy.test") >= 1
    assert await cluster_requests(client, "PassthroughCluster") == 0


# --- outboundTrafficPolicy ----------------------------------------------------------------------------------
REGISTERED = """
apiVersion: v1
kind: Service
metadata: {name: inventory}
spec: {ports: [{port: 8080, name: http}], selector: {app: inventory}}
"""


async def test_allow_any_is_the_default_passthrough(mesh: Mesh) -> None:
    unknown = await mesh.backend("unknown", namespace=NS, port=8181, register=False)
    client = await mesh.sidecar(NS, "sleep-1", {"app": "sleep"})
    await mesh.wait_synced()
    r = await answers(mesh, client, f"http://{unknown.ip}:8181/x", "unknown")
    assert r.json()["path"] == "/x"
    assert await cluster_requests(client, "PassthroughCluster") >= 1


async def test_registry_only_mesh_wide_blocks_unknown_hosts() -> None:
    async with Mesh(mesh_config=MeshConfig(outbound_policy=OutboundPolicy.REGISTRY_ONLY)) as mesh:
        unknown = await mesh.backend("unknown", namespace=NS, port=8181, register=False)
        await mesh.backend("inventory", namespace=NS, port=8080)
        client = await mesh.sidecar(NS, "sleep-1", {"app": "sleep"})
        await mesh.apply_yaml(REGISTERED, namespace=NS)
        await mesh.wait_synced()
        await answers(mesh, client, "http://inventory:8080/", "inventory")
        r = await get(mesh, client, f"http://{unknown.ip}:8181/x")
        assert r.status_code == 502 and unknown.requests == 0
        assert (await get(mesh, client, "http://httpbin.example.test/")).status_code == 502
        # registering the external host with a ServiceEntry is what lets it through (Istio's egress control)
        await mesh.apply_yaml(external_se("httpbin-ext", "httpbin.example.test", "STATIC",
                                          [(unknown.ip, unknown.port, {})]), namespace=NS)
        await mesh.wait_synced()
        await answers(mesh, client, "http://httpbin.example.test/", "unknown")
        assert (await get(mesh, client, "http://other.example.test/")).status_code == 502


async def test_registry_only_per_namespace_sidecar(mesh: Mesh) -> None:
    unknown = await mesh.backend("unknown", namespace=NS, port=8181, register=False)
    await mesh.backend("inventory", namespace=NS, port=8080)
    locked = await mesh.sidecar(NS, "sleep-1", {"app": "sleep"})
    free = await mesh.sidecar("open", "sleep-2", {"app": "sleep"})
    await mesh.apply_yaml(REGISTERED, namespace=NS)
    await mesh.apply_yaml("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""", namespace=NS)
    await mesh.wait_synced()
    url = f"http://{unknown.ip}:8181/x"
    await answers(mesh, locked, "http://inventory:8080/", "inventory")
    assert (await get(mesh, locked, url)).status_code == 502
    assert unknown.requests == 0
    await answers(mesh, free, url, "unknown")              # the mesh default (ALLOW_ANY) elsewhere
    await answers(mesh, free, f"http://inventory.{NS}:8080/", "inventory")


# --- endpoints follow workloads -----------------------------------------------------------------------------
async def test_endpoints_follow_registered_workloads(mesh: Mesh) -> None:
    first = await mesh.backend("inventory", "v1", namespace=NS, port=8080)
    second = await mesh.backend("inventory", "v2", namespace=NS, port=8080, register=False)
    client = await mesh.sidecar(NS, "sleep-1", {"app": "sleep"})
    await mesh.apply_yaml(REGISTERED, namespace=NS)
    await mesh.wait_synced()
    await answers(mesh, client, "http://inventory:8080/", "inventory")

    log: list[tuple[float, str]] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        deadline = time.monotonic() + 10
        async with mesh.client_via(client, timeout=5) as c:
            for _ in range(3000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    r = await c.get("http://inventory:8080/")
                    log.append((time.monotonic(), r.json()["version"] if r.status_code == 200
                                else str(r.status_code)))
                except httpx.HTTPError as e:
                    log.append((time.monotonic(), type(e).__name__))

    task = asyncio.create_task(traffic())
    try:
        await asyncio.sleep(0.2)
        added_at = time.monotonic()
        mesh.cp.register_workload(second.workload())       # a new replica becomes ready

        async def reaches_new() -> None:
            assert any(v == "v2" for _, v in log), Counter(v for _, v in log)
        await eventually(reaches_new, timeout=3)
        first_v2 = min(t for t, v in log if v == "v2")
        assert first_v2 - added_at < 1.0, first_v2 - added_at

        assert mesh.cp.remove_workload(NS, first.pod)        # the old replica goes away
        removed_at = time.monotonic()
        await asyncio.sleep(1.2)
        stop.set()
        await task
    finally:
        stop.set()
        await task
        mesh.cp.remove_workload(NS, second.pod)
    outcomes = Counter(v for _, v in log)
    assert set(outcomes) == {"v1", "v2"}, outcomes          # no failed request throughout
    late = Counter(v for t, v in log if t > removed_at + 1.0)
    assert late and set(late) == {"v2"}, late               # v1 no longer gets traffic a second later
