"""Two real sidecars with workload identities from the control plane (``Mesh(identities=True)``, as the demo
runs them): each agent gets its pod credential, serves SDS to its Envoy and forwards xDS over TLS. With a
4 s certificate lifetime, continuous requests from one sidecar to the other never fail while both rotate.
Where the generated config uses the certificates between sidecars (auto mTLS), the server's app sees the
caller's SPIFFE ID and at least 3 distinct client certificates (``x-forwarded-client-cert`` Hash) meanwhile.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from harness import Mesh
from mizzen.security.identity import Identity

pytestmark = pytest.mark.e2e

NS = "bookinfo"
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""


def xfcc_fields(value: str) -> dict[str, str]:
    """The last element of an ``x-forwarded-client-cert`` header (the hop to this app) as key -> value."""
    last = value.split(",")[-1]
    out: dict[str, str] = {}
    for part in last.split(";"):
        key, _, val = part.partition("=")
        out[key.strip()] = val.strip().strip('"')
    return out


async def test_rotation_between_two_sidecars_drops_no_request() -> None:
    async with Mesh(identities=True, secret_ttl_s=4) as mesh:
        await mesh.apply_yaml(SERVICE)
        server = await mesh.backend("reviews", namespace=NS, sidecar=True)
        client = await mesh.sidecar(NS, "productpage-v1-6b746f74dc-twosc")
        await mesh.wait_synced(timeout=20)
        agents = [client, server.sidecar]
        for agent in agents:
            assert agent is not None and agent.identity is not None and agent.identity.agent is not None
            await agent.identity.agent.manager.wait_ready(20)
        failures, hashes, uris = 0, [], set()
        ok = 0
        async with mesh.client_via(client, timeout=5) as http:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:         # the first request once the route is there
                try:
                    if (await http.get("http://reviews.bookinfo:9080/")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            end = time.monotonic() + 7.0
            while time.monotonic() < end:
                try:
                    r = await http.get("http://reviews.bookinfo:9080/")
                    if r.status_code != 200:
                        failures += 1
                        continue
                    ok += 1
                    headers = {k.lower(): v for k, v in r.json()["headers"].items()}
                    xfcc = headers.get("x-forwarded-client-cert")
                    if xfcc:
                        fields = xfcc_fields(xfcc)
                        if not hashes or hashes[-1] != fields.get("Hash"):
                            hashes.append(fields.get("Hash", ""))
                        uris.add(fields.get("URI", ""))
                except httpx.HTTPError:
                    failures += 1
                await asyncio.sleep(0.03)
        assert failures == 0 and ok > 50, (failures, ok)
        # both agents rotated at least twice during the traffic (3+ certificates each)
        for agent in agents:
            assert agent is not None and agent.identity is not None and agent.identity.agent is not None
            assert len(set(agent.identity.agent.manager.stats.served_serials)) >= 3
        # the streams are authenticated as the pods' identities
        principals = {s.node_id: s.principal for s in mesh.cp.ads._live}
        assert principals[client.node_id] == (Identity(NS, "default").uri,)
        if hashes:        # auto mTLS between the sidecars: the peer saw the caller's rotating certificates
            assert uris == {Identity(NS, "default").uri}
            assert len(set(hashes)) >= 3, hashes
