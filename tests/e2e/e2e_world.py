"""A small Bookinfo-shaped world for the end-to-end scenario tests: Kubernetes Services for the four Bookinfo
services in namespace ``bookinfo``, in-process backends standing in for their pods, and one client sidecar
(``productpage-v1``) whose outbound ``http_proxy`` listener the tests send requests through.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness import Backend, Mesh
from mizzen.agent.envoy import Agent

NS = "bookinfo"
SEED = Path(__file__).parent.parent / "fixtures" / "seed"
SAMPLES = Path(__file__).parent.parent / "fixtures" / "istio" / "samples" / "bookinfo" / "networking"

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: productpage, labels: {app: productpage}}
spec: {ports: [{port: 9080, name: http}], selector: {app: productpage}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {app: reviews}}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, labels: {app: ratings}}
spec: {ports: [{port: 9080, name: http}], selector: {app: ratings}}
---
apiVersion: v1
kind: Service
metadata: {name: details, labels: {app: details}}
spec: {ports: [{port: 9080, name: http}], selector: {app: details}}
"""


def seed(name: str) -> str:
    return (SEED / name).read_text()


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


@dataclass
class World:
    mesh: Mesh
    client: Agent                                  # productpage-v1's sidecar
    backends: dict[str, Backend] = field(default_factory=dict)   # "reviews-v2" -> backend

    def http(self, timeout: float = 10.0) -> httpx.AsyncClient:
        return self.mesh.client_via(self.client, timeout=timeout)

    async def versions(self, url: str, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
        """Send ``n`` requests to ``url`` through the client sidecar; count answering versions."""
        seen: Counter[str] = Counter()
        async with self.http() as c:
            for _ in range(n):
                r = await c.get(url, headers=headers)
                seen[r.json()["version"] if r.status_code == 200 else f"HTTP {r.status_code}"] += 1
        return seen


async def bookinfo_world(mesh: Mesh, reviews: tuple[str, ...] = ("v1", "v2", "v3")) -> World:
    await mesh.apply_yaml(SERVICES, namespace=NS, file="services.yaml")
    world = World(mesh, client=await mesh.sidecar(NS, "productpage-v1-abc", {"app": "productpage",
                                                                             "version": "v1"}))
    for svc, versions in (("reviews", reviews), ("ratings", ("v1",)), ("details", ("v1",)),
                          ("productpage", ("v1",))):
        for v in versions:
            world.backends[f"{svc}-{v}"] = await mesh.backend(svc, v, namespace=NS, port=9080)
    await mesh.wait_synced()
    return world
