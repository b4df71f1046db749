"""EDS after the last Service is deleted: the proxy's EDS state is empty and that is SYNCED, not STALE
forever (issue 7, "Also"), with a real Envoy: a sidecar ACKs the empty endpoint set and ``/debug/syncz`` says
so."""

from __future__ import annotations

import asyncio

from harness import Mesh, eventually, mesh  # noqa: F401  (mesh is a fixture)
from mizzen.xds import SYNCED
from mizzen.xds.resources import ENDPOINT

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
"""


async def test_eds_is_synced_after_the_last_service_is_deleted(mesh: Mesh) -> None:  # noqa: F811
    await mesh.apply_yaml(SERVICE)
    await mesh.backend("ratings")
    sidecar = await mesh.sidecar("default", "client-0", {"app": "client"})
    node = sidecar.node_id
    await mesh.wait_synced(timeout=20)
    assert mesh.cp.status.type_state(node, ENDPOINT) == SYNCED
    assert mesh.cp.cache.get(node).of(ENDPOINT).resources      # the ratings endpoints

    await mesh.delete_yaml(SERVICE)
    await mesh.cp.flush()
    snap = mesh.cp.cache.get(node)
    assert snap is not None and not snap.of(ENDPOINT).resources   # nothing left to send

    async def eds_synced() -> bool:
        return mesh.cp.status.type_state(node, ENDPOINT) == SYNCED

    await eventually(eds_synced, timeout=10)
    await asyncio.sleep(1.0)          # and it stays synced (Envoy has nothing more to say)
    assert mesh.cp.status.type_state(node, ENDPOINT) == SYNCED
    await mesh.wait_synced(timeout=5)
    async with mesh.api_client() as c:
        syncz = (await c.get("/debug/syncz")).json()
    entry = next(e for e in syncz if e["proxy"] == node)
    assert entry["types"]["EDS"]["status"] == SYNCED, entry["types"]["EDS"]

    # a new Service brings the subscription back, and the endpoints with it
    await mesh.apply_yaml(SERVICE)
    await mesh.wait_synced(timeout=10)
    assert mesh.cp.status.type_state(node, ENDPOINT) == SYNCED
    ts = mesh.cp.status.proxy(node).types[ENDPOINT]
    assert not ts.unsubscribed and ts.acked_nonce == ts.nonce
    assert mesh.cp.cache.get(node).of(ENDPOINT).resources
