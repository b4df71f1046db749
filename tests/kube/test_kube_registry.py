"""The service registry from Kubernetes, against the real API server and controller-manager: pods the node
agent runs appear in the real EndpointSlices, and from there in a real Envoy's EDS (described by their Pods:
labels, service account, locality from the Node), and requests through the Envoy reach them; scaling is an
EDS-only push; a Service's create/update/delete reaches CDS; the system namespace's network label and the
mesh config ConfigMap are applied; an API-server restart leaves no stale endpoint; the mizzen CLI works
against the control plane (``--kubeconfig``)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from kube_harness import UNAVAILABLE, nodeagent

from harness import Agent, Mesh, eventually
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")]

REGION, ZONE = "eu-west1", "eu-west1-c"
TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
MIZZEN = os.path.join(os.path.dirname(sys.executable), "mizzen")


def manifests(ns: str, replicas: int) -> str:
    server = f"{sys.executable} -m http.server 8080 --directory /data"
    page = "import os, sys; open(sys.argv[1], 'w').write(os.environ['MY_POD'])"
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: ServiceAccount
        metadata: {{name: web-sa, namespace: {ns}}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: web, namespace: {ns}}}
        spec:
          selector: {{app: web}}
          ports: [{{name: http, port: 80, targetPort: 8080}}]
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: web, namespace: {ns}}}
        spec:
          replicas: {replicas}
          selector: {{matchLabels: {{app: web}}}}
          template:
            metadata: {{labels: {{app: web, version: v1}}}}
            spec:
              serviceAccountName: web-sa
              terminationGracePeriodSeconds: 2
              initContainers:
              - name: page
                image: example/init
                command: ["{sys.executable}", "-c", "{page}"]
                args: ["/data/index.html"]
                env: [{{name: MY_POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
                volumeMounts: [{{name: data, mountPath: /data}}]
              containers:
              - name: web
                image: example/web
                command: {json.dumps(server.split())}
                ports: [{{containerPort: 8080, name: http}}]
                readinessProbe: {{httpGet: {{path: /index.html, port: 8080}}, periodSeconds: 1}}
                volumeMounts: [{{name: data, mountPath: /data}}]
              volumes: [{{name: data, emptyDir: {{}}}}]
        """)


@pytest.fixture(scope="module")
def node(kube_cluster: Any) -> Iterator[Any]:
    agent = nodeagent.NodeAgent(kube_cluster, "mizzen-node-reg", region=REGION, zone=ZONE, lease_renew_s=2.0)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


def kjson(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json"))


def ready_ips(cluster: Any, ns: str, service: str = "web") -> set[str]:
    ips: set[str] = set()
    for s in kjson(cluster, "get", "endpointslices", "-n", ns, "-l",
                   f"kubernetes.io/service-name={service}")["items"]:
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready"):
                ips.update(ep["addresses"])
    return ips


async def wait_ready_ips(cluster: Any, ns: str, count: int, timeout: float = 120.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        ips = await asyncio.to_thread(ready_ips, cluster, ns)
        if len(ips) == count:
            return ips
        if time.monotonic() > deadline:
            pods = [(p["metadata"]["name"], p["status"].get("phase"), p["status"].get("containerStatuses"))
                    for p in kjson(cluster, "get", "pods", "-n", ns)["items"]]
            raise AssertionError(f"{count} ready endpoints not reached in {timeout} s: {ips}; pods: {pods}")
        await asyncio.sleep(0.5)


async def envoy_endpoints(agent: Agent, cluster: str) -> dict[str, str]:
    """``ip:port`` -> health flags of ``cluster`` in the Envoy's own view (admin /clusters)."""
    out: dict[str, str] = {}
    for line in (await agent.admin_get("/clusters")).splitlines():
        if line.startswith(cluster + "::") and "::health_flags::" in line:
            addr, flags = line[len(cluster) + 2:].split("::health_flags::")
            out[addr] = flags
    return out


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    return await eventually(check, timeout=timeout, interval=0.2)


def responses(mesh: Mesh, agent: Agent) -> dict[str, int]:
    """Responses sent on the proxy's stream per type."""
    ps = mesh.cp.status.proxy(agent.node_id)
    assert ps is not None
    return {t: ps.of(t).responses for t in TYPES}


async def cluster_dump(agent: Agent, name: str) -> dict[str, Any] | None:
    dump = json.loads(await agent.admin_get("/config_dump?resource=dynamic_active_clusters"))
    for c in dump.get("configs") or []:
        if c.get("cluster", {}).get("name") == name:
            return dict(c["cluster"])
    return None


async def mizzen(mesh: Mesh, *args: str) -> tuple[int, str]:
    """Run the mizzen CLI against the control plane (without blocking its event loop)."""
    env = {**os.environ, "MIZZEN_TOKEN": mesh.cp.token, "MIZZEN_STATE_DIR": str(mesh.state_dir)}
    proc = await asyncio.create_subprocess_exec(
        MIZZEN, "--server", mesh.cp.http_url, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def own_system_namespace(cluster: Any, monkeypatch: pytest.MonkeyPatch, ns: str, mesh: str = "") -> str:
    """A system namespace of the test's own (``$POD_NAMESPACE`` of the control plane it starts: the mesh
    config ConfigMap and the default network are read there, as istiod reads them in its own namespace),
    whose mesh config selects only the test's namespace ``ns`` (``discoverySelectors``): the session cluster
    holds other tests' namespaces, and their objects going away (a namespace deleted with --wait=false goes
    on for a while) would push this test's proxy CDS/LDS/RDS where it counts EDS-only pushes. The caller
    deletes it."""
    system = f"{ns}-system"
    cluster.kubectl("create", "namespace", system)
    set_mesh_config(cluster, system, ns, mesh)
    monkeypatch.setenv("POD_NAMESPACE", system)
    return system


def set_mesh_config(cluster: Any, system: str, ns: str, mesh: str = "") -> None:
    """The ``istio`` ConfigMap of ``system``: ``mesh`` plus discoverySelectors selecting ``ns`` only."""
    selectors = f"discoverySelectors: [{{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}]\n"
    cluster.kubectl("apply", "-f", "-", stdin=cluster.kubectl(
        "create", "configmap", "istio", "-n", system, "--dry-run=client", "-o", "yaml",
        f"--from-literal=mesh={selectors}{mesh}"))


async def test_endpointslices_drive_envoy(kube_cluster: Any, node: Any, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    c, ns = kube_cluster, "reg-eds"
    host = f"web.{ns}.svc.cluster.local"
    name = f"outbound|80||{host}"
    c.kubectl("create", "namespace", ns)
    system = own_system_namespace(c, monkeypatch, ns)
    other = f"{ns}-other"
    try:
        c.kubectl("create", "namespace", other)
        c.kubectl("apply", "-f", "-", stdin=manifests(ns, 2))
        first = await wait_ready_ips(c, ns, 2)
        async with Mesh(kubeconfig=c.kubeconfig) as mesh:
            # listed before xDS is served: the registry already has both pods, described by them
            eps = mesh.cp.registry.snapshot().endpoints_for(host, 80)
            assert {e.address for e in eps} == first
            for e in eps:
                assert e.port == 8080 and e.service_account == "web-sa" and e.namespace == ns
                assert e.locality == f"{REGION}/{ZONE}" and e.workload.startswith("web-")
                assert e.labels["app"] == "web" and e.labels["topology.kubernetes.io/zone"] == ZONE

            client = await mesh.sidecar(ns, "client-1", {"app": "client"})

            async def has(ips: set[str]) -> None:
                got = await envoy_endpoints(client, name)
                assert set(got) == {f"{ip}:8080" for ip in ips}, got
                assert all(flags == "healthy" for flags in got.values()), got
            await until(lambda: has(first))

            async def pods_answer() -> set[str]:
                async with mesh.client_via(client) as http:
                    seen = {(await http.get("http://web/index.html")).text for _ in range(8)}
                assert len(seen) == 2 and all(s.startswith("web-") for s in seen), seen
                return seen
            await until(pods_answer)     # real requests through the Envoy reach both pods

            # scale up: EDS only, never CDS/LDS/RDS; meanwhile a Service comes in a namespace the mesh
            # config does not select (as other tests' objects come and go on the shared cluster): not read
            await mesh.wait_synced(timeout=10)
            before = responses(mesh, client)
            c.kubectl("scale", "-n", ns, "deployment/web", "--replicas=3")
            c.kubectl("create", "service", "clusterip", "noise", "-n", other, "--tcp=80:8080")
            three = await wait_ready_ips(c, ns, 3)
            await until(lambda: has(three))
            await mesh.wait_synced(timeout=10)
            after = responses(mesh, client)
            sent = {t for t in TYPES if after[t] != before[t]}
            assert sent == {ENDPOINT}, (before, after)
            assert mesh.cp.store.get("Service", other, "noise") is None

            # a ServiceEntry selecting the Pods by label (the aggregate registry: pods as workloads), and a
            # DestinationRule whose subset v1 selects them and v9 nothing (analyze says so, about v9 only)
            c.kubectl("apply", "-n", ns, "-f", "-", stdin=textwrap.dedent("""\
                apiVersion: networking.istio.io/v1
                kind: ServiceEntry
                metadata: {name: web-internal}
                spec:
                  hosts: [web.internal]
                  location: MESH_INTERNAL
                  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
                  resolution: STATIC
                  workloadSelector: {labels: {app: web}}
                ---
                apiVersion: networking.istio.io/v1
                kind: DestinationRule
                metadata: {name: web}
                spec:
                  host: web
                  subsets: [{name: v1, labels: {version: v1}}, {name: v9, labels: {version: v9}}]
                """))

            async def selected_by_entry() -> None:
                got = await envoy_endpoints(client, "outbound|80||web.internal")
                assert set(got) == {f"{ip}:8080" for ip in three}, got
            await until(selected_by_entry)
            rc, out = await mizzen(mesh, "get", "se", "-n", ns)
            assert rc == 0 and "web-internal" in out and "web.internal" in out, out
            rc, out = await mizzen(mesh, "analyze", "-n", ns)
            assert "IST0173" in out and "Subset v9" in out and "Subset v1 " not in out, out

            # a deleted pod leaves EDS (terminating endpoints are never sent) and its replacement joins
            victim = sorted(three)[0]
            pod = next(p for p in kjson(c, "get", "pods", "-n", ns)["items"]
                       if p["status"].get("podIP") == victim)
            c.kubectl("delete", "pod", "-n", ns, pod["metadata"]["name"], "--wait=false")

            async def replaced() -> None:
                ips = await asyncio.to_thread(ready_ips, c, ns)
                assert victim not in ips and len(ips) == 3, ips
                await has(ips)
            await until(replaced, timeout=90)

            # the Service updated (a second port) and deleted: CDS follows
            c.kubectl("patch", "-n", ns, "service", "web", "--type=json", "-p", json.dumps([
                {"op": "add", "path": "/spec/ports/-",
                 "value": {"name": "http-alt", "port": 9090, "targetPort": 8080}}]))
            alt = f"outbound|9090||{host}"

            async def alt_served() -> None:
                ips = await asyncio.to_thread(ready_ips, c, ns)
                got = await envoy_endpoints(client, alt)
                assert set(got) == {f"{ip}:8080" for ip in ips} and len(got) == 3, got
            await until(alt_served, timeout=60)

            # the mizzen CLI against this control plane
            rc, out = await mizzen(mesh, "get", "svc", "-n", ns)
            assert rc == 0 and "web" in out and "80/TCP,9090/TCP" in out.replace(" ", ""), out
            rc, out = await mizzen(mesh, "describe", "svc", "web", "-n", ns)
            assert rc == 0 and "9090" in out, out
            rc, out = await mizzen(mesh, "proxy-status")
            assert rc == 0 and "client-1" in out and "SYNCED" in out, out
            rc, out = await mizzen(mesh, "proxy-config", "clusters", "client-1", "-n", ns)
            assert rc == 0 and host in out, out
            rc, out = await mizzen(mesh, "get", "pods", "-n", ns, "-o", "wide")
            rows = [line.split() for line in out.splitlines()[1:]]
            assert rc == 0 and len(rows) == 3 and all(r[1:3] == ["1/1", "Running"] for r in rows), out
            assert {r[5] for r in rows} == await asyncio.to_thread(ready_ips, c, ns), out
            rc, out = await mizzen(mesh, "describe", "pod", rows[0][0], "-n", ns)
            assert rc == 0 and f"IP:  {rows[0][5]}" in out and "web-sa" in out, out
            # the app's log through the API server's pods/log (the node agent's kubelet API): the readiness
            # probes http.server logged
            rc, out = await mizzen(mesh, "logs", rows[0][0], "-n", ns, "--tail", "2")
            lines = out.strip().splitlines()
            assert rc == 0 and len(lines) == 2 and '"GET /index.html HTTP/1.1" 200' in out, out
            rc, out = await mizzen(mesh, "logs", rows[0][0], "-n", ns, "-c", "nope")
            assert rc == 1 and "container nope is not valid for pod" in out and "Traceback" not in out, out

            c.kubectl("delete", "-n", ns, "service", "web")

            async def gone() -> None:
                assert await cluster_dump(client, name) is None
            await until(gone)
            assert not mesh.cp.registry.snapshot().endpoints_for(host, 80)
    finally:
        c.kubectl("delete", "namespace", ns, system, other, "--wait=false")


async def test_network_label_and_mesh_config(kube_cluster: Any, node: Any, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """The default network and the mesh config come from the control plane's own namespace ($POD_NAMESPACE,
    here not the root namespace istio-system)."""
    c, ns = kube_cluster, "reg-mesh"
    host = f"web.{ns}.svc.cluster.local"
    subset = f"outbound|80|net-a|{host}"
    c.kubectl("create", "namespace", ns)
    system = own_system_namespace(c, monkeypatch, ns)
    try:
        c.kubectl("label", "namespace", system, "topology.istio.io/network=net-a", "--overwrite")
        c.kubectl("apply", "-f", "-", stdin=manifests(ns, 1) + textwrap.dedent(f"""\
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {{name: web, namespace: {ns}}}
            spec:
              host: web
              subsets: [{{name: net-a, labels: {{topology.istio.io/network: net-a}}}}]
            """))
        (ip,) = await wait_ready_ips(c, ns, 1)
        async with Mesh(kubeconfig=c.kubeconfig) as mesh:
            client = await mesh.sidecar(ns, "client-2", {"app": "client"})

            async def subset_has(ips: set[str]) -> None:
                got = await envoy_endpoints(client, subset)
                assert set(got) == {f"{i}:8080" for i in ips}, got
            await until(lambda: subset_has({ip}))
            # the system namespace's network changes: the endpoint leaves the subset, by EDS alone
            await mesh.wait_synced(timeout=10)
            before = responses(mesh, client)
            c.kubectl("label", "namespace", system, "topology.istio.io/network=net-b", "--overwrite")
            await until(lambda: subset_has(set()))
            await mesh.wait_synced(timeout=10)
            after = responses(mesh, client)
            assert {t for t in TYPES if after[t] != before[t]} == {ENDPOINT}, (before, after)
            eps = mesh.cp.registry.snapshot().endpoints_for(host, 80)
            assert [e.labels["topology.istio.io/network"] for e in eps] == ["net-b"]

            # the mesh config ConfigMap: connectTimeout reaches the clusters; a bad one keeps the last good
            plain = f"outbound|80||{host}"

            async def timeout_is(value: str) -> None:
                dump = await cluster_dump(client, plain)
                assert dump is not None and dump.get("connect_timeout") == value, dump
            await until(lambda: timeout_is("10s"))
            set_mesh_config(c, system, ns, "connectTimeout: 7s\nenableTracing: true\n")
            await until(lambda: timeout_is("7s"))
            set_mesh_config(c, system, ns, "connectTimeout: -3s\n")

            async def refused() -> None:
                assert mesh.cp.mesh_config_problem and "connectTimeout" in mesh.cp.mesh_config_problem
            await until(refused)
            async with mesh.api_client() as api:    # said where an operator looks
                problem = (await api.get("/debug/configz")).json()["mesh_config_problem"]
                assert problem.startswith(f"mesh config ConfigMap {system}/istio: connectTimeout"), problem
            await timeout_is("7s")
            c.kubectl("delete", "configmap", "istio", "-n", system)
            await until(lambda: timeout_is("10s"))
    finally:
        c.kubectl("delete", "namespace", ns, system, "--wait=false")


async def test_api_server_restart_leaves_no_stale_endpoint(kube_cluster: Any, node: Any) -> None:
    c, ns = kube_cluster, "reg-restart"
    name = f"outbound|80||web.{ns}.svc.cluster.local"
    c.kubectl("create", "namespace", ns)
    try:
        c.kubectl("apply", "-f", "-", stdin=manifests(ns, 2))
        two = await wait_ready_ips(c, ns, 2)
        async with Mesh(kubeconfig=c.kubeconfig) as mesh:
            client = await mesh.sidecar(ns, "client-3", {"app": "client"})

            async def has(ips: set[str]) -> None:
                got = await envoy_endpoints(client, name)
                assert set(got) == {f"{ip}:8080" for ip in ips}, got
            await until(lambda: has(two))
            assert mesh.cp.kube_registry is not None
            lists = sum(r.lists for r in mesh.cp.kube_registry.reflectors)
            c.kill("kube-apiserver")
            await asyncio.sleep(2.0)      # every watch breaks; the reflectors back off and retry
            c.respawn("kube-apiserver")
            await asyncio.to_thread(c.wait_ready)
            # scaled down right away, while the reflectors are still backing off: the change must arrive
            # by the re-watch (or the re-list after a 410), and the removed pod must leave Envoy
            c.kubectl("scale", "-n", ns, "deployment/web", "--replicas=1")
            one = await wait_ready_ips(c, ns, 1)
            await until(lambda: has(one), timeout=60)

            async def stable() -> None:    # no stale endpoint comes back later either
                assert await asyncio.to_thread(ready_ips, c, ns) == one
                await has(one)
            await asyncio.sleep(3.0)
            await until(stable)
            assert sum(r.lists for r in mesh.cp.kube_registry.reflectors) >= lists
    finally:
        c.kubectl("delete", "namespace", ns, "--wait=false")


async def test_service_kinds_and_secrets(kube_cluster: Any) -> None:
    """ExternalName and appProtocol Services from the cluster reach CDS; Secrets are mirrored through the
    config path (for credentialName), service-account token Secrets never."""
    c, ns = kube_cluster, "reg-kinds"
    c.kubectl("create", "namespace", ns)
    try:
        c.kubectl("apply", "-n", ns, "-f", "-", stdin=textwrap.dedent("""\
            apiVersion: v1
            kind: Service
            metadata: {name: ext}
            spec: {type: ExternalName, externalName: localhost, ports: [{name: http, port: 8080}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: api}
            spec:
              selector: {app: api}
              ports: [{name: api, port: 7070, appProtocol: grpc}]
            ---
            apiVersion: v1
            kind: Secret
            metadata: {name: sa-token, annotations: {kubernetes.io/service-account.name: default}}
            type: kubernetes.io/service-account-token
            """))
        c.kubectl("create", "secret", "generic", "gw-cred", "-n", ns, "--from-literal=cert=pem-here")
        async with Mesh(kubeconfig=c.kubeconfig) as mesh:
            secret = mesh.cp.store.get("Secret", ns, "gw-cred")
            assert secret is not None and secret.spec["data"]["cert"] == "cGVtLWhlcmU="
            assert mesh.cp.store.get("Secret", ns, "sa-token") is None
            client = await mesh.sidecar(ns, "client-4", {"app": "client"})

            async def clusters() -> None:
                ext = await cluster_dump(client, f"outbound|8080||ext.{ns}.svc.cluster.local")
                assert ext is not None and ext["type"] in ("STRICT_DNS", "LOGICAL_DNS"), ext
                assert "localhost" in json.dumps(ext["load_assignment"]), ext
                api = await cluster_dump(client, f"outbound|7070||api.{ns}.svc.cluster.local")
                assert api is not None and "http2_protocol_options" in json.dumps(api), api
            await until(clusters)
            c.kubectl("delete", "secret", "gw-cred", "-n", ns)

            async def secret_gone() -> None:
                assert mesh.cp.store.get("Secret", ns, "gw-cred") is None
            await until(secret_gone)
    finally:
        c.kubectl("delete", "namespace", ns, "--wait=false")
