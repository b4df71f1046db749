"""The Kubernetes config source against a real API server: create/update/delete of every supported kind reach
the config store; an object that fails Mizzen's validation never replaces the valid one; a watch from a
compacted resourceVersion (410 Gone) re-lists; an API-server restart is survived with no lost or stale object;
1,000 objects applied at once converge."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kube_harness import SAMPLES

from mizzen.config import kinds
from mizzen.controlplane.store import ConfigStore
from mizzen.kube.client import KubeConfigError, connect
from mizzen.kube.config_source import KubeConfigSource
from mizzen.kube.reflector import Reflector, ResourceType

pytestmark = pytest.mark.e2e


async def until(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = cond()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def mirrored(cluster: Any, **kw: Any) -> AsyncIterator[tuple[ConfigStore, KubeConfigSource]]:
    api = await connect(cluster.kubeconfig)
    store = ConfigStore()
    source = KubeConfigSource(api, store, **kw)
    task = asyncio.create_task(source.run())
    try:
        await source.wait_synced(timeout=30)
        yield store, source
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()


def kubectl_apply(cluster: Any, ns: str, text: str) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=textwrap.dedent(text))


def ns(cluster: Any, name: str) -> str:
    cluster.kubectl("create", "namespace", name)
    return name


async def test_every_kind_created_updated_deleted(kube_cluster: Any) -> None:
    n = ns(kube_cluster, "src-kinds")
    async with mirrored(kube_cluster) as (store, _):
        docs = {
            "Gateway": "gateway.networking.istio.io/gw",
            "VirtualService": "virtualservice.networking.istio.io/reviews",
            "DestinationRule": "destinationrule.networking.istio.io/reviews",
            "ServiceEntry": "serviceentry.networking.istio.io/ext",
            "WorkloadEntry": "workloadentry.networking.istio.io/vm1",
            "Sidecar": "sidecar.networking.istio.io/default",
            "Service": "service/reviews",
        }
        kubectl_apply(kube_cluster, n, """
            apiVersion: v1
            kind: Service
            metadata: {name: reviews, labels: {app: reviews}}
            spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
            ---
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata: {name: gw}
            spec: {selector: {istio: ingressgateway},
                   servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]}
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: reviews}
            spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
            ---
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: ext}
            spec: {hosts: [ext.example.com], ports: [{number: 80, name: http, protocol: HTTP}],
                   resolution: DNS, location: MESH_EXTERNAL}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: vm1}
            spec: {address: 10.244.250.9, labels: {app: reviews}}
            ---
            apiVersion: networking.istio.io/v1
            kind: Sidecar
            metadata: {name: default}
            spec: {egress: [{hosts: ["./*"]}]}
            """)
        kube_cluster.kubectl("apply", "-n", n, "-f", str(SAMPLES / "virtual-service-reviews-80-20.yaml"))
        for kind in docs:
            await until(lambda k=kind: [c for c in store.list(k, n)], what=f"{kind} in the store")
        vs = store.list("VirtualService", n)[0]
        assert sorted(r["weight"] for r in vs.spec["http"][0]["route"]) == [20, 80]
        assert "status" not in vs.spec and "uid" not in vs.annotations

        kube_cluster.kubectl("apply", "-n", n, "-f", str(SAMPLES / "virtual-service-reviews-v3.yaml"))
        await until(lambda: store.list("VirtualService", n)[0].spec["http"][0]["route"][0]
                    ["destination"].get("subset") == "v3", what="VirtualService updated")

        for ref in docs.values():
            kube_cluster.kubectl("delete", "-n", n, ref)
        await until(lambda: not store.list(namespace=n), what="every object deleted from the store")


async def test_invalid_object_never_replaces_the_valid_one(kube_cluster: Any) -> None:
    n = ns(kube_cluster, "src-invalid")
    kube_cluster.kubectl("apply", "-n", n, "-f", str(SAMPLES / "virtual-service-reviews-v3.yaml"))
    async with mirrored(kube_cluster) as (store, source):
        await until(lambda: store.list("VirtualService", n), what="valid VirtualService mirrored")
        # passes the CRD's structural schema, fails Istio's semantics (Mizzen validates them itself)
        kubectl_apply(kube_cluster, n, """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: reviews}
            spec:
              hosts: [reviews]
              http:
              - match: [{uri: {regex: "(unclosed"}}]
                route: [{destination: {host: reviews, subset: v1}}]
            """)
        rejected = await until(lambda: [r for r in source.rejected.values() if r.key.namespace == n],
                               what="rejection recorded")
        assert "regex" in rejected[0].reason
        vs = store.list("VirtualService", n)[0]
        assert vs.spec["http"][0]["route"][0]["destination"]["subset"] == "v3"   # the valid one still serves
        kube_cluster.kubectl("delete", "-n", n, "virtualservice", "reviews")
        await until(lambda: not store.list("VirtualService", n), what="deleted")
        assert not [r for r in source.rejected.values() if r.key.namespace == n]


class Recorder:
    def __init__(self) -> None:
        self.replaced: list[list[str]] = []
        self.upserts: list[str] = []

    def replace(self, objects: list[dict[str, Any]]) -> None:
        self.replaced.append(sorted(o["metadata"]["name"] for o in objects))

    def upsert(self, obj: dict[str, Any]) -> None:
        self.upserts.append(obj["metadata"]["name"])

    def delete(self, obj: dict[str, Any]) -> None:
        pass


async def compacted(api: Any, version: str, timeout: float = 40.0) -> None:
    """Until the API server answers a watch of ConfigMaps from ``version`` with 410 Gone (the test cluster
    compacts etcd every 5 s and serves ConfigMaps without its watch cache)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        resp = await api.call_api("/api/v1/configmaps", "GET", query_params=[
            ("watch", "true"), ("resourceVersion", version), ("timeoutSeconds", "1")],
            auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True)
        try:
            first = await resp.content.readline()
        finally:
            resp.release()
        if b'"code":410' in first:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"resourceVersion {version} was not compacted in {timeout} s")


async def test_watch_from_a_compacted_version_relists(kube_cluster: Any) -> None:
    n = ns(kube_cluster, "src-gone")
    kube_cluster.kubectl("create", "configmap", "one", "-n", n)
    api = await connect(kube_cluster.kubeconfig)
    await compacted(api, "1")
    rec = Recorder()
    # resourceVersion 1 has been compacted away: the server answers 410 Gone and the reflector lists
    r = Reflector(api, ResourceType("", "v1", "configmaps"), rec, resume_from="1")
    task = asyncio.create_task(r.run())
    try:
        await asyncio.wait_for(r.synced.wait(), 30)
        assert r.lists == 1
        assert "one" in rec.replaced[0]
        kube_cluster.kubectl("create", "configmap", "two", "-n", n)
        await until(lambda: "two" in rec.upserts, what="watch resumed after the re-list")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()


async def test_error_answers_are_reported_and_retried(kube_cluster: Any, caplog: Any) -> None:
    api = await connect(kube_cluster.kubeconfig)
    r = Reflector(api, ResourceType("networking.istio.io", "v1", "nosuchthings"), Recorder())
    task = asyncio.create_task(r.run())
    try:
        await until(lambda: "API server answered 404" in caplog.text, what="the 404 reported")
        assert not r.synced.is_set()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()


async def test_api_server_restart_loses_nothing(kube_cluster: Any) -> None:
    n = ns(kube_cluster, "src-restart")
    for name in ("keep", "drop"):
        kubectl_apply(kube_cluster, n, f"""
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {{name: {name}}}
            spec: {{host: {name}}}
            """)
    async with mirrored(kube_cluster, kinds_=(kinds.DESTINATION_RULE,)) as (store, source):
        await until(lambda: len(store.list("DestinationRule", n)) == 2, what="both mirrored")
        lists_before = source.reflectors[0].lists
        kube_cluster.kill("kube-apiserver")
        await asyncio.sleep(1.0)   # the watch breaks; the reflector retries with backoff
        kube_cluster.respawn("kube-apiserver")
        await asyncio.to_thread(kube_cluster.wait_ready)
        kube_cluster.kubectl("delete", "-n", n, "destinationrule", "drop")
        kubectl_apply(kube_cluster, n, """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: added}
            spec: {host: added}
            """)
        await until(lambda: sorted(c.name for c in store.list("DestinationRule", n)) == ["added", "keep"],
                    timeout=60, what="store equal to the cluster after the restart")
        assert source.reflectors[0].lists >= lists_before


async def test_thousand_objects_converge(kube_cluster: Any) -> None:
    n = ns(kube_cluster, "src-bulk")
    async with mirrored(kube_cluster, kinds_=(kinds.DESTINATION_RULE,)) as (store, _):
        docs = "\n---\n".join(
            f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: dr{i}}}\n"
            f"spec: {{host: svc{i}.example.com}}" for i in range(1000))
        kube_cluster.kubectl("apply", "--server-side", "-n", n, "-f", "-", stdin=docs, timeout=300)
        await until(lambda: len(store.list("DestinationRule", n)) == 1000, timeout=120,
                    what="1,000 DestinationRules mirrored")


async def test_bad_kubeconfig_is_one_line(tmp_path: Any) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("this: is: not yaml: [")
    with pytest.raises(KubeConfigError) as e:
        await connect(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    with pytest.raises(KubeConfigError, match="does not exist"):
        await connect(tmp_path / "missing")

