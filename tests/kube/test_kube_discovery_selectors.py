"""meshConfig ``discoverySelectors`` against the real API server: the control plane reads the config and the
endpoints of the selected namespaces only; a change of the mesh config ConfigMap or of a Namespace's labels
adds or removes a namespace's Services, Istio config and endpoints without a restart, and a real Envoy's
clusters follow; an invalid selector keeps the last good ones. Plus the selector rules themselves."""

from __future__ import annotations

import asyncio
import json
import textwrap
from typing import Any

import pytest
from kube_harness import UNAVAILABLE

from harness import Mesh, eventually
from mizzen.kube.client import connect
from mizzen.kube.discovery import DiscoverySelectorError, NamespaceFilter, parse_discovery_selectors
from mizzen.kube.meshconfig import MeshConfigError, discovery_selectors
from mizzen.kube.registry_source import KubeRegistrySource
from mizzen.kube.rootcert import CONFIGMAP, RootCertPublisher
from mizzen.registry.registry import Registry

SYSTEM_NS = "dsel-system"   # the control plane's own namespace ($POD_NAMESPACE): its mesh config ConfigMap
A, B = "dsel-a", "dsel-b"


def test_selectors_select_namespaces_and_report_changes() -> None:
    f = NamespaceFilter()
    seen: list[frozenset[str] | None] = []
    f.add_listener(seen.append)
    f.set_namespaces({"a": {"team": "a"}, "b": {"team": "b"}, "c": {}})
    assert seen == [] and f.admits("a") and f.admits("c") and f.admits("unknown")   # no selectors: all
    f.set_selectors(parse_discovery_selectors([{"matchLabels": {"team": "a"}},
                                               {"matchExpressions": [{"key": "env", "operator": "Exists"}]}]))
    assert seen == [None] and f.admits("a") and not f.admits("b") and not f.admits("unknown")
    assert f.admits("")                                   # cluster-scoped objects always pass
    f.set_namespaces({"a": {"team": "a"}, "b": {"team": "b", "env": "x"}, "c": {}})
    assert seen[-1] == frozenset({"b"}) and f.admits("b")
    f.set_namespaces({"a": {"team": "a"}, "b": {"team": "b", "env": "x"}, "c": {}, "d": {}})
    assert len(seen) == 2                                 # an unselected namespace created: nothing changes
    f.set_selectors(parse_discovery_selectors([{}]))      # an empty selector matches every namespace
    assert seen[-1] == frozenset({"c", "d"}) and all(f.admits(n) for n in "abcd")
    f.set_selectors(())
    assert seen[-1] is None and f.admits("anything")


@pytest.mark.parametrize(("doc", "message"), [
    ("discoverySelectors: {team: a}", "discoverySelectors: expected a list"),
    ("discoverySelectors: [{matchExpressions: [{key: team, operator: Bogus}]}]",
     "discoverySelectors[0].matchExpressions[0].operator: 'Bogus' is not a valid label selector operator"),
    ("discoverySelectors: [{matchExpressions: [{key: team, operator: In}]}]",
     "must not be empty for operator In"),
    ("discoverySelectors: [{matchLabel: {team: a}}]", "unknown field 'matchLabel'"),
])
def test_invalid_selectors_are_refused_in_one_line(doc: str, message: str) -> None:
    with pytest.raises(MeshConfigError) as e:
        discovery_selectors(doc)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert issubclass(DiscoverySelectorError, ValueError)


def _namespace_world(ns: str, ip: str) -> str:
    """A selector-less Service with a hand-made EndpointSlice (no pods needed) and a DestinationRule."""
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: web, namespace: {ns}}}
        spec: {{ports: [{{name: http, port: 80, targetPort: 8080}}]}}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: web-1
          namespace: {ns}
          labels: {{kubernetes.io/service-name: web}}
        addressType: IPv4
        ports: [{{name: http, port: 8080, protocol: TCP}}]
        endpoints: [{{addresses: ["{ip}"], conditions: {{ready: true}}}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: web, namespace: {ns}}}
        spec: {{host: web, trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: 7}}}}}}}}
        """)


def _mesh_configmap(cluster: Any, mesh: str) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=cluster.kubectl(
        "create", "configmap", "istio", "-n", SYSTEM_NS, "--dry-run=client", "-o", "yaml",
        f"--from-literal=mesh={mesh}"))


@pytest.mark.e2e
@pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")
async def test_discovery_selectors_follow_mesh_config_and_namespace_labels(
        kube_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    c = kube_cluster
    c.kubectl("create", "namespace", SYSTEM_NS)   # not istio-system: other tests (install) judge that one
    monkeypatch.setenv("POD_NAMESPACE", SYSTEM_NS)
    c.kubectl("create", "namespace", A)
    c.kubectl("create", "namespace", B)
    try:
        c.kubectl("label", "namespace", A, "mesh=on")
        c.kubectl("apply", "-f", "-", stdin=_namespace_world(A, "10.244.250.1") + "---\n"
                  + _namespace_world(B, "10.244.250.2"))
        host = {ns: f"web.{ns}.svc.cluster.local" for ns in (A, B)}
        async with Mesh(kubeconfig=c.kubeconfig) as mesh:
            cp = mesh.cp
            client = await mesh.sidecar(A, "client-dsel", {"app": "client"})

            def read(ns: str) -> bool:
                """Whether the control plane has the namespace's Service, DestinationRule and endpoints."""
                service = cp.store.get("Service", ns, "web") is not None
                rule = cp.store.get("DestinationRule", ns, "web") is not None
                eps = bool(cp.registry.snapshot().endpoints_for(host[ns], 80))
                assert service == rule == eps, (ns, service, rule, eps)
                return service

            async def envoy_has(want: dict[str, bool]) -> None:
                dump = json.loads(await client.admin_get("/config_dump?resource=dynamic_active_clusters"))
                clusters = {x["cluster"]["name"] for x in dump.get("configs") or []}
                got = {ns: f"outbound|80||{host[ns]}" in clusters for ns in want}
                assert got == want, got

            async def state(want: dict[str, bool]) -> None:
                async def check() -> None:
                    assert {ns: read(ns) for ns in want} == want
                    await envoy_has(want)
                await eventually(check, timeout=30, interval=0.2)

            await state({A: True, B: True})                      # no selectors: every namespace
            _mesh_configmap(c, "discoverySelectors: [{matchLabels: {mesh: 'on'}}]\n")
            await state({A: True, B: False})                     # the mesh config selects A only
            c.kubectl("label", "namespace", B, "mesh=on")
            await state({A: True, B: True})                      # B labelled: read again, no restart
            c.kubectl("label", "namespace", A, "mesh-")
            await state({A: False, B: True})                     # A unlabelled: dropped
            # an object created in an unselected namespace is held back until the namespace is selected
            c.kubectl("apply", "-f", "-", stdin=textwrap.dedent(f"""\
                apiVersion: networking.istio.io/v1
                kind: VirtualService
                metadata: {{name: late, namespace: {A}}}
                spec: {{hosts: [web], http: [{{route: [{{destination: {{host: web}}}}]}}]}}
                """))
            _mesh_configmap(c, "discoverySelectors: [{matchExpressions: [{key: mesh, operator: Bogus}]}]\n")

            async def refused() -> None:
                assert cp.mesh_config_problem and "discoverySelectors" in cp.mesh_config_problem
            await eventually(refused, timeout=30, interval=0.2)
            await state({A: False, B: True})                     # the last good selectors stay
            assert cp.store.get("VirtualService", A, "late") is None
            _mesh_configmap(c, "discoverySelectors: [{matchExpressions: [{key: kubernetes.io/metadata.name, "
                               f"operator: In, values: [{A}]}}]}}]\n")
            await state({A: True, B: False})
            assert cp.store.get("VirtualService", A, "late") is not None
            c.kubectl("delete", "configmap", "istio", "-n", SYSTEM_NS)
            await state({A: True, B: True})                      # no mesh config: every namespace again
    finally:
        c.kubectl("delete", "namespace", A, B, SYSTEM_NS, "--wait=false")


@pytest.mark.e2e
@pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")
async def test_root_cert_only_in_selected_namespaces(kube_cluster: Any) -> None:
    """Istio's namespace controller publishes istio-ca-root-cert only where discovery selectors select (the
    Namespaces' labels come from the registry source, as in the control plane)."""
    c, on, off = kube_cluster, "dsel-root-on", "dsel-root-off"
    c.kubectl("create", "namespace", on)
    c.kubectl("create", "namespace", off)
    api = await connect(c.kubeconfig)
    selected = NamespaceFilter()
    selected.set_selectors(parse_discovery_selectors([{"matchLabels": {"root-test": "yes"}}]))
    registry = KubeRegistrySource(api, Registry(), namespaces=selected)
    publisher = RootCertPublisher(api, lambda: "ROOT PEM\n", namespaces=selected)
    tasks = [asyncio.create_task(registry.run()), asyncio.create_task(publisher.run())]

    def has_configmap(ns: str) -> bool:
        out = c.kubectl("get", "configmap", "-n", ns, "-o", "json")
        return any(i["metadata"]["name"] == CONFIGMAP for i in json.loads(out)["items"])
    try:
        c.kubectl("label", "namespace", on, "root-test=yes")
        await registry.wait_synced(timeout=30)

        async def published(want: dict[str, bool]) -> None:
            got = {ns: await asyncio.to_thread(has_configmap, ns) for ns in want}
            assert got == want, got
        await eventually(lambda: published({on: True}), timeout=30, interval=0.2)
        await asyncio.sleep(1.0)                  # and none in the unselected namespace, after a while either
        await published({off: False})
        c.kubectl("label", "namespace", off, "root-test=yes")
        await eventually(lambda: published({off: True}), timeout=30, interval=0.2)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await api.close()
        c.kubectl("delete", "namespace", on, off, "--wait=false")
