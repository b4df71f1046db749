"""Config scoping end to end, through the real control plane and real Envoys: Sidecar egress hosts (namespace
default and workloadSelector override), exportTo on VirtualService / DestinationRule / Service annotation,
short-name resolution across namespaces, DestinationRule lookup order (client, service, root namespace), and
TCP services through a gateway TCP server and a Sidecar egress listener with ``port`` + ``bind``.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from e2e_world import NS, SERVICES, bookinfo_world

from harness import Mesh, alloc_ip, eventually
from mizzen.agent.envoy import Agent
from mizzen.registry.model import Workload

pytestmark = pytest.mark.e2e

REVIEWS_FQDN = f"reviews.{NS}.svc.cluster.local"


async def status_of(mesh: Mesh, client: Agent, url: str) -> int:
    async with mesh.client_via(client, timeout=5) as c:
        return (await c.get(url)).status_code


async def versions(mesh: Mesh, client: Agent, url: str, n: int = 10) -> Counter[str]:
    seen: Counter[str] = Counter()
    async with mesh.client_via(client, timeout=5) as c:
        for _ in range(n):
            r = await c.get(url)
            seen[r.json()["version"] if r.status_code == 200 else f"HTTP {r.status_code}"] += 1
    return seen


async def eventually_versions(mesh: Mesh, client: Agent, url: str, want: Counter[str]) -> None:
    async def check() -> None:
        got = await versions(mesh, client, url, sum(want.values()))
        assert got == want, (url, got)
    await eventually(check)


async def cluster_names(agent: Agent) -> set[str]:
    """The dynamic clusters in the Envoy's config dump (what the control plane sent it)."""
    dump = json.loads(await agent.admin_get("/config_dump?resource=dynamic_active_clusters"))
    return {c["cluster"]["name"] for c in dump.get("configs", ())}


# --- Sidecar egress hosts -----------------------------------------------------------------------------------
STORE = """
apiVersion: v1
kind: Service
metadata: {name: catalog}
spec: {ports: [{port: 8080, name: http}], selector: {app: catalog}}
"""

SIDECAR_LOCAL_ONLY = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: page-sees-store}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress:
  - hosts: ["./*", "store/catalog.store.svc.cluster.local"]
"""


async def test_sidecar_egress_hosts_scope_what_a_namespace_reaches(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)           # client productpage-v1 in bookinfo
    await mesh.apply_yaml(STORE, namespace="store")
    catalog = await mesh.backend("catalog", namespace="store", port=8080)
    reviewer = await mesh.sidecar(NS, "reviews-v9-abc", {"app": "reviews-client"})
    await mesh.wait_synced()
    await eventually_versions(mesh, reviewer, "http://catalog.store:8080/", Counter({"v1": 3}))

    await mesh.apply_yaml(SIDECAR_LOCAL_ONLY, namespace=NS)
    await mesh.wait_synced()
    await eventually_versions(mesh, reviewer, "http://ratings:9080/", Counter({"v1": 3}))  # own namespace

    async def store_unreachable() -> None:
        assert await status_of(mesh, reviewer, "http://catalog.store:8080/") != 200
        clusters = await cluster_names(reviewer)
        assert not any(c.endswith(".store.svc.cluster.local") for c in clusters), clusters
        assert f"outbound|9080||ratings.{NS}.svc.cluster.local" in clusters
    await eventually(store_unreachable)
    before = catalog.requests
    for _ in range(3):
        assert await status_of(mesh, reviewer, "http://catalog.store:8080/") != 200
    assert catalog.requests == before

    # the workload-specific Sidecar overrides the namespace default for the proxies it selects
    await eventually_versions(mesh, world.client, "http://catalog.store:8080/", Counter({"v1": 3}))
    page_clusters = await cluster_names(world.client)
    assert "outbound|8080||catalog.store.svc.cluster.local" in page_clusters

    await mesh.delete_yaml(SIDECAR_LOCAL_ONLY, namespace=NS)
    await mesh.wait_synced()
    await eventually_versions(mesh, reviewer, "http://catalog.store:8080/", Counter({"v1": 3}))


async def test_root_namespace_sidecar_is_the_mesh_default(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    telemetry = STORE.replace("catalog", "telemetry").replace("8080", "9090")
    await mesh.apply_yaml(telemetry, namespace="istio-system")
    await mesh.backend("telemetry", namespace="istio-system", port=9090)
    guest = await mesh.sidecar("guests", "sleep-1", {"app": "sleep"})
    await mesh.apply_yaml(SIDECAR_LOCAL_ONLY.split("---")[0], namespace="istio-system")
    await mesh.wait_synced()

    async def scoped() -> None:
        assert await status_of(mesh, guest, f"http://reviews.{NS}:9080/") != 200
        assert not any(c.endswith(f".{NS}.svc.cluster.local") for c in await cluster_names(guest))
    await eventually(scoped)
    await eventually_versions(mesh, guest, "http://telemetry.istio-system:9090/", Counter({"v1": 2}))
    await eventually_versions(mesh, world.client, "http://telemetry.istio-system:9090/", Counter({"v1": 2}))
    # a namespace's own Sidecar replaces the root one
    await mesh.apply_yaml("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress: [{hosts: ["*/*"]}]
""", namespace="guests")
    await mesh.wait_synced()
    await eventually_versions(mesh, guest, f"http://ratings.{NS}:9080/", Counter({"v1": 2}))


OPS_VS = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-teapot}}
spec:
  hosts: [{REVIEWS_FQDN}]
  http: [{{fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}},
          route: [{{destination: {{host: {REVIEWS_FQDN}}}}}]}}]
"""


async def test_sidecar_egress_hosts_import_virtual_services_by_their_namespace(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh, reviews=("v1",))
    guest = await mesh.sidecar("guests", "sleep-1", {"app": "sleep"})
    await mesh.apply_yaml(OPS_VS, namespace="ops")             # public VS about bookinfo's service, in "ops"
    await mesh.apply_yaml("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress: [{hosts: ["./*", "bookinfo/*"]}]
""", namespace="guests")
    await mesh.wait_synced()
    url = f"http://reviews.{NS}:9080/"
    # guests import bookinfo's services and bookinfo's VSs, not the VS declared in "ops"
    await eventually_versions(mesh, guest, url, Counter({"v1": 3}))
    await eventually_versions(mesh, world.client, url, Counter({"HTTP 418": 3}))   # no Sidecar: */*


# --- exportTo -----------------------------------------------------------------------------------------------
VS_PRIVATE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-private}
spec:
  hosts: [reviews]
  exportTo: ["."]
  http:
  - headers: {response: {set: {x-routed-by: reviews-private}}}
    route: [{destination: {host: reviews, subset: v2}}]
"""

DR_PRIVATE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  exportTo: ["."]
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


async def test_export_to_dot_keeps_virtual_service_and_destination_rule_private(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh, reviews=("v1", "v2"))
    outsider = await mesh.sidecar("guests", "sleep-1", {"app": "sleep"})
    await mesh.apply_yaml(DR_PRIVATE + "---" + VS_PRIVATE, namespace=NS)
    await mesh.wait_synced()
    url = f"http://reviews.{NS}:9080/"

    await eventually_versions(mesh, world.client, url, Counter({"v2": 6}))
    async with mesh.client_via(world.client) as c:
        assert (await c.get(url)).headers.get("x-routed-by") == "reviews-private"
    # outside the namespace neither the VS nor the DR exists: default round robin, no subset clusters
    seen = await versions(mesh, outsider, url, 20)
    assert set(seen) == {"v1", "v2"}, seen
    async with mesh.client_via(outsider) as c:
        assert "x-routed-by" not in (await c.get(url)).headers
    assert f"outbound|9080|v2|{REVIEWS_FQDN}" in await cluster_names(world.client)
    outsider_clusters = await cluster_names(outsider)
    assert f"outbound|9080||{REVIEWS_FQDN}" in outsider_clusters
    assert f"outbound|9080|v2|{REVIEWS_FQDN}" not in outsider_clusters

    # a VS exported everywhere that names the private DR's subset: the outsider has no such cluster
    await mesh.apply_yaml(VS_PRIVATE.replace('exportTo: ["."]', 'exportTo: ["*"]'), namespace=NS)
    await mesh.wait_synced()
    await eventually_versions(mesh, outsider, url, Counter({"HTTP 503": 3}))
    await eventually_versions(mesh, world.client, url, Counter({"v2": 3}))


GATEWAY_VS = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-gateway}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-public}
spec:
  hosts: ["*"]
  gateways: [shop-gateway]
  exportTo: ["."]
  http: [{route: [{destination: {host: ratings}}]}]
"""


async def test_export_to_applies_to_gateways_by_their_namespace(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    gw = await mesh.gateway()            # in istio-system, like Istio's ingress gateway
    await mesh.apply_yaml(GATEWAY_VS, namespace=NS)
    await mesh.wait_synced()
    # exported to "." only: the VS does not bind the istio-system gateway proxy (Istio's exportTo)
    async with mesh.gateway_client(gw) as c:
        assert (await c.get("/ratings/0")).status_code == 404
    exported = GATEWAY_VS.replace('exportTo: ["."]', 'exportTo: [".", istio-system]')
    await mesh.apply_yaml(exported, namespace=NS)
    await mesh.wait_synced()

    async def routed() -> None:
        async with mesh.gateway_client(gw) as c:
            r = await c.get("/ratings/0")
            assert r.status_code == 200 and r.json()["service"] == "ratings", r.status_code
    await eventually(routed)
    assert world.backends["ratings-v1"].requests >= 1


PRIVATE_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: vault
  annotations: {networking.istio.io/exportTo: "."}
spec: {ports: [{port: 8200, name: http}], selector: {app: vault}}
"""


async def test_service_export_to_annotation(mesh: Mesh) -> None:
    await mesh.apply_yaml(PRIVATE_SERVICE, namespace="secrets")
    vault = await mesh.backend("vault", namespace="secrets", port=8200)
    insider = await mesh.sidecar("secrets", "app-1", {"app": "app"})
    outsider = await mesh.sidecar("guests", "sleep-1", {"app": "sleep"})
    await mesh.wait_synced()
    await eventually_versions(mesh, insider, "http://vault:8200/", Counter({"v1": 3}))
    before = vault.requests
    assert await status_of(mesh, outsider, "http://vault.secrets:8200/") != 200
    assert await status_of(mesh, outsider, "http://vault.secrets.svc.cluster.local:8200/") != 200
    assert vault.requests == before
    assert not any("vault.secrets" in c for c in await cluster_names(outsider))


async def test_service_entry_export_to_dot(mesh: Mesh) -> None:
    ext = await mesh.backend("partner", namespace="secrets", port=8000, register=False)
    insider = await mesh.sidecar("secrets", "app-1", {"app": "app"})
    outsider = await mesh.sidecar("guests", "sleep-1", {"app": "sleep"})
    await mesh.apply_yaml(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: partner}}
spec:
  hosts: [api.partner.test]
  exportTo: ["."]
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {ext.ip}}}]
""", namespace="secrets")
    await mesh.wait_synced()
    await eventually_versions(mesh, insider, "http://api.partner.test:8000/", Counter({"v1": 2}))
    assert await status_of(mesh, outsider, "http://api.partner.test:8000/") != 200
    assert ext.requests == 2
    assert "outbound|8000||api.partner.test" not in await cluster_names(outsider)


# --- short names and DestinationRule lookup order -----------------------------------------------------------
def pick_dr(namespace_host: str, version: str, name: str = "reviews-pick") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: {namespace_host}
  subsets: [{{name: pick, labels: {{version: {version}}}}}]
"""


VS_PICK = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: pick}}]}]
"""


GUEST_VS = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-for-guests}}
spec:
  hosts: [{REVIEWS_FQDN}]
  exportTo: ["."]
  http: [{{route: [{{destination: {{host: {REVIEWS_FQDN}, subset: other}}}}]}}]
"""

OTHER_DR = pick_dr("reviews", "v1", name="reviews-other").replace("name: pick", "name: other")


async def test_short_names_and_destination_rule_lookup_order(mesh: Mesh) -> None:
    world = await bookinfo_world(mesh)
    guest = await mesh.sidecar("guests", "sleep-1", {"app": "sleep"})
    # VS host "reviews" written in bookinfo means reviews.bookinfo.svc.cluster.local
    await mesh.apply_yaml(VS_PICK, namespace=NS)
    await mesh.apply_yaml(pick_dr("reviews", "v2"), namespace=NS)             # the service's namespace
    await mesh.apply_yaml(pick_dr(REVIEWS_FQDN, "v3"), namespace="istio-system")  # the root namespace
    await mesh.wait_synced()
    for url in (f"http://reviews.{NS}:9080/", f"http://{REVIEWS_FQDN}:9080/", f"http://reviews.{NS}.svc:9080/"):
        await eventually_versions(mesh, guest, url, Counter({"v2": 3}))
    await eventually_versions(mesh, world.client, "http://reviews:9080/", Counter({"v2": 3}))
    # a short name is only the client's own namespace: "reviews" from guests is not bookinfo's service
    assert await status_of(mesh, guest, "http://reviews:9080/") != 200

    # a consumer-side VirtualService, private to the client's namespace, for bookinfo's service (by FQDN):
    # it wins over bookinfo's exported one for that namespace only (Istio prefers private VSs)
    await mesh.apply_yaml(GUEST_VS, namespace="guests")
    # a second DR for the same host in bookinfo: merged with the first (its subset "other" is added)
    await mesh.apply_yaml(OTHER_DR, namespace=NS)
    await mesh.wait_synced()
    await eventually_versions(mesh, guest, f"http://reviews.{NS}:9080/", Counter({"v1": 3}))
    await eventually_versions(mesh, world.client, "http://reviews:9080/", Counter({"v2": 3}))
    await mesh.delete_yaml(GUEST_VS, namespace="guests")
    await mesh.delete_yaml(OTHER_DR, namespace=NS)
    await mesh.wait_synced()
    await eventually_versions(mesh, guest, f"http://reviews.{NS}:9080/", Counter({"v2": 3}))

    # the client's namespace comes first (its DR must name the FQDN: a short host would mean guests/reviews)
    await mesh.apply_yaml(pick_dr(REVIEWS_FQDN, "v1"), namespace="guests")
    await mesh.wait_synced()
    await eventually_versions(mesh, guest, f"http://reviews.{NS}:9080/", Counter({"v1": 3}))
    await eventually_versions(mesh, world.client, "http://reviews:9080/", Counter({"v2": 3}))

    # without the client's and the service's, the root namespace's DR applies
    await mesh.delete_yaml(pick_dr(REVIEWS_FQDN, "v1"), namespace="guests")
    await mesh.delete_yaml(pick_dr("reviews", "v2"), namespace=NS)
    await mesh.wait_synced()
    await eventually_versions(mesh, guest, f"http://reviews.{NS}:9080/", Counter({"v3": 3}))
    await eventually_versions(mesh, world.client, "http://reviews:9080/", Counter({"v3": 3}))


# --- TCP ----------------------------------------------------------------------------------------------------
TCP_NS = "tcp-echo"
TCP_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: echo}
spec: {ports: [{port: 9000, name: tcp}], selector: {app: echo}}
"""


@pytest.fixture
async def tcp_echo(mesh: Mesh) -> AsyncIterator[tuple[str, int]]:
    """An in-process TCP echo server (answers ``echo:<line>``) registered as the ``echo`` Service's pod."""
    ip = alloc_ip()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(b"echo:" + line)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, ip, 9000)
    await mesh.apply_yaml(TCP_SERVICE, namespace=TCP_NS)
    mesh.cp.register_workload(Workload(name="echo-1", namespace=TCP_NS, address=ip, labels={"app": "echo"}))
    try:
        yield ip, 9000
    finally:
        mesh.cp.remove_workload(TCP_NS, "echo-1")
        server.close()
        await server.wait_closed()


async def echo_through(host: str, port: int, text: str) -> str:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    try:
        writer.write(text.encode() + b"\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 2)).decode().strip()
    finally:
        writer.close()


async def eventually_echo(host: str, port: int) -> None:
    async def check() -> None:
        try:
            got = await echo_through(host, port, "ping")
        except (OSError, TimeoutError) as e:
            raise AssertionError(f"{host}:{port}: {e!r}") from e
        assert got == "echo:ping", got
    await eventually(check)


async def test_tcp_service_through_a_gateway_tcp_server(mesh: Mesh, tcp_echo: tuple[str, int]) -> None:
    gw = await mesh.gateway()
    await mesh.apply_yaml(f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: echo-gateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 31400, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: ["*"]
  gateways: [echo-gateway]
  tcp:
  - match: [{{port: 31400}}]
    route: [{{destination: {{host: echo.{TCP_NS}.svc.cluster.local, port: {{number: 9000}}}}}}]
""", namespace=TCP_NS)
    await mesh.wait_synced()
    await eventually_echo(gw.spec.ip, 31400)
    for i in range(3):
        assert await echo_through(gw.spec.ip, 31400, f"m{i}") == f"echo:m{i}"


async def test_tcp_service_through_a_sidecar_egress_listener_with_bind(mesh: Mesh,
                                                                        tcp_echo: tuple[str, int]) -> None:
    client = await mesh.sidecar("tcp-client", "client-1", {"app": "client"})
    bind = alloc_ip()
    await mesh.apply_yaml(f"""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default}}
spec:
  egress:
  - port: {{number: 9000, protocol: TCP, name: tcp}}
    bind: {bind}
    captureMode: NONE
    hosts: ["{TCP_NS}/echo.{TCP_NS}.svc.cluster.local"]
  - port: {{number: 9080, protocol: HTTP, name: http}}
    bind: {bind}
    captureMode: NONE
    hosts: ["{NS}/*"]
  - hosts: ["*/*"]
""", namespace="tcp-client")
    await mesh.wait_synced()
    await eventually_echo(bind, 9000)
    assert await echo_through(bind, 9000, "hello") == "echo:hello"
    assert f"outbound|9000||echo.{TCP_NS}.svc.cluster.local" in await cluster_names(client)
    # an HTTP client in the same namespace still gets its HTTP services through the catch-all egress entry
    await mesh.apply_yaml(SERVICES, namespace=NS)
    await mesh.backend("details", namespace=NS, port=9080)
    await mesh.wait_synced()
    await eventually_versions(mesh, client, f"http://details.{NS}:9080/", Counter({"v1": 2}))
    # and an HTTP egress listener on the same bind address routes by Host (RDS "9080")
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        for host in (f"details.{NS}:9080", f"details.{NS}.svc.cluster.local"):
            r = await c.get(f"http://{bind}:9080/details/0", headers={"Host": host})
            assert r.status_code == 200 and r.json()["service"] == "details", (host, r.status_code)

