"""The push loop with real Envoys: a generation failure for one proxy is isolated and reported, the others are
pushed; state survives a control-plane restart; the ``python -m mizzen.controlplane`` entry runs and stops."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import httpx
import pytest
from cp_process import controlplane_process
from envoy.config.listener.v3 import listener_pb2

from harness import Mesh, eventually, scrape
from mizzen.config.model import Config
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.generate import generate
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext
from mizzen.xds.resources import CLUSTER, LISTENER, ResourceSet

pytestmark = pytest.mark.e2e

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: reviews}
"""
POISON = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: poison}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    timeout: 3s
"""


def flaky(proxy: Proxy, push: PushContext, types: Collection[str] | None = None) -> ResourceSet:
    """The real generator, except that it crashes for the "fragile" app while a VS named poison exists."""
    if proxy.labels.get("app") == "fragile" and push.configs.get("VirtualService", "bookinfo", "poison"):
        raise RuntimeError("boom")
    return generate(proxy, push, types)


async def test_generation_error_is_isolated() -> None:
    async with Mesh(generator=flaky) as mesh, mesh.api_client() as api:
        fragile = await mesh.sidecar("bookinfo", "fragile-1", {"app": "fragile"})
        sturdy = await mesh.sidecar("bookinfo", "sturdy-1", {"app": "sturdy"})
        await mesh.wait_synced()
        before = mesh.cp.cache.get(fragile.node_id)
        assert before is not None

        await mesh.apply_yaml(SERVICE + "---\n" + POISON, namespace="bookinfo")
        await mesh.wait_synced()
        ps = (await api.get("/debug/push_status")).json()
        assert ps["proxies_failed"] == 1 and ps["proxies_pushed"] == 1
        (err,) = ps["errors"]
        assert err["proxy"] == fragile.node_id and err["message"] == "RuntimeError: boom"
        # the fragile proxy keeps its last snapshot; the sturdy one got the new service
        assert mesh.cp.cache.get(fragile.node_id) is before
        sturdy_snap = mesh.cp.cache.get(sturdy.node_id)
        assert sturdy_snap is not None
        assert "outbound|9080||reviews.bookinfo.svc.cluster.local" in sturdy_snap.of(CLUSTER).resources
        assert (await api.get("/ready")).status_code == 200
        assert (await fragile.admin_get("/ready")).strip() == "LIVE"

        await mesh.delete_yaml(POISON, namespace="bookinfo")
        await mesh.wait_synced()
        ps = (await api.get("/debug/push_status")).json()
        assert ps["errors"] == [] and ps["proxies_failed"] == 0
        fresh = mesh.cp.cache.get(fragile.node_id)
        assert fresh is not None and "outbound|9080||reviews.bookinfo.svc.cluster.local" in fresh.of(
            CLUSTER).resources


async def test_state_survives_restart(tmp_path: Path) -> None:
    cfg = Config("DestinationRule", "networking.istio.io/v1", "reviews", "bookinfo", {"host": "reviews"})
    opts = ControlPlaneOptions(state_dir=tmp_path, xds_port=0, http_port=None)
    async with ControlPlane(opts) as cp:
        cp.apply([cfg])
        version = cp.store.snapshot().version
        created = cp.store.get("DestinationRule", "bookinfo", "reviews").created  # type: ignore[union-attr]
    async with ControlPlane(opts) as cp2:
        assert cp2.store.snapshot().version == version
        assert cp2.store.get("DestinationRule", "bookinfo", "reviews").created == created  # type: ignore[union-attr]
        assert cp2.registry.snapshot() is not None
    # a corrupt state file: the control plane still starts, and says so in its debug endpoints
    (tmp_path / "objects/DestinationRule/bookinfo/reviews.json").write_text("{truncated")
    opts.http_port = 0
    async with ControlPlane(opts) as cp3, httpx.AsyncClient(
            base_url=cp3.http_url, trust_env=False, headers={"Authorization": f"Bearer {cp3.token}"}) as api:
        assert len(cp3.store) == 0
        for endpoint in ("/debug/configz", "/debug/push_status"):
            (problem,) = (await api.get(endpoint)).json()["load_problems"]
            assert problem["path"].endswith("reviews.json") and "JSONDecodeError" in problem["error"]


async def test_module_entry_point(tmp_path: Path) -> None:
    async with controlplane_process("--state-dir", str(tmp_path), "--xds-port", "0", "--http-port", "0",
                                    "--log-level", "WARNING") as line:
        assert line.startswith("mizzen control plane: xds=127.0.0.1:"), line
        http = line.split("http=")[1].strip()
        async with httpx.AsyncClient(base_url=http, trust_env=False) as api:
            assert (await api.get("/ready")).json() == {"ready": True, "workloads_synced": True}


def with_bad_listener(proxy: Proxy, push: PushContext, types: Collection[str] | None = None) -> ResourceSet:
    """The real generator plus, while a VS named nack exists, a listener Envoy must reject (no address)."""
    rs = generate(proxy, push, types)
    if LISTENER not in rs.by_type or not push.configs.get("VirtualService", "bookinfo", "nack"):
        return rs
    listeners = {**rs.of(LISTENER), "bad": listener_pb2.Listener(name="bad")}
    return ResourceSet({**rs.by_type, LISTENER: listeners})


async def test_nacks_are_reported() -> None:
    async with Mesh(generator=with_bad_listener) as mesh, mesh.api_client() as api:
        proxy = await mesh.sidecar("bookinfo", "productpage-v1", {"app": "productpage"})
        await mesh.wait_synced()
        before = scrape((await api.get("/metrics")).text)
        await mesh.apply_yaml(POISON.replace("name: poison", "name: nack"), namespace="bookinfo")
        await mesh.cp.flush()

        async def nacked() -> list[dict[str, object]]:
            nacks: list[dict[str, object]] = (await api.get("/debug/push_status")).json()["nacks"]
            assert nacks
            return nacks

        (nack,) = await eventually(nacked)
        assert nack["proxy"] == proxy.node_id and nack["type"] == "LDS" and nack["message"]
        (entry,) = (await api.get("/debug/syncz")).json()
        assert entry["types"]["LDS"]["status"] == "NACKED"
        # Envoy keeps serving its previous listeners
        assert (await proxy.admin_get("/ready")).strip() == "LIVE"
        after = scrape((await api.get("/metrics")).text)   # istiod's reject counter, by type
        assert after['pilot_total_xds_rejects{type="lds"}'] == before.get(
            'pilot_total_xds_rejects{type="lds"}', 0) + 1
        await mesh.delete_yaml(POISON.replace("name: poison", "name: nack"), namespace="bookinfo")
        await mesh.wait_synced()
        assert (await api.get("/debug/push_status")).json()["nacks"] == []
