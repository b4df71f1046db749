"""Shared pieces of the authorization tests: a server workload with a sidecar in namespace ``foo`` behind
Service ``server``, a client sidecar, Istio's sample JWT material, and a helper that applies a policy,
waits until every proxy ACKed it, and sends real requests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness import Backend, Mesh

NS = "foo"
SAMPLES = Path("/work/shared/istio/security/tools/jwt/samples")
_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "jwt"


def sample_file(name: str) -> Path:
    """Istio's JWT samples (demo.jwt, groups-scope.jwt, jwks.json), from the shared copy or the fixtures."""
    p = SAMPLES / name
    return p if p.exists() else _FIXTURES / name


DEMO_JWT = sample_file("demo.jwt").read_text().strip()
GROUPS_JWT = sample_file("groups-scope.jwt").read_text().strip()
JWKS = sample_file("jwks.json").read_text()
ISSUER = "testing@secure.istio.io"

SERVICES = f"""
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: {NS}}}
spec:
  selector: {{app: server}}
  ports: [{{name: http, port: 9080, targetPort: 9080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: tcpserver, namespace: {NS}}}
spec:
  selector: {{app: tcpserver}}
  ports: [{{name: tcp, port: 9090, targetPort: 9090}}]
"""


@dataclass
class World:
    mesh: Mesh
    server: Backend
    client: object   # the client's sidecar Agent
    tcp: Backend     # a workload behind a TCP (tcp_proxy) port 9090

    async def tcp_status(self, local_address: str | None = None) -> int:
        """An HTTP request over the TCP service's port: the app's status, or 0 when the connection is
        refused or closed (network RBAC denies by closing it)."""
        transport = httpx.AsyncHTTPTransport(local_address=local_address, verify=False)   # plain HTTP
        try:
            async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=5) as c:
                return (await c.get(f"http://{self.tcp.address}:9090/")).status_code
        except httpx.TransportError:
            return 0

    async def apply(self, text: str) -> None:
        await self.mesh.apply_yaml(text)
        await self.mesh.wait_synced(timeout=15)

    async def delete(self, text: str) -> None:
        await self.mesh.delete_yaml(text)
        await self.mesh.wait_synced(timeout=15)

    async def status(self, path: str = "/", method: str = "GET", headers: Mapping[str, str] | None = None,
                     host: str = "server.foo:9080") -> tuple[int, str]:
        """One request from the client's sidecar to the server; (status, body)."""
        # verify=False: plain HTTP, and no CA bundle loaded per client (~40 ms each, hundreds per table)
        async with self.mesh.client_via(self.client, verify=False) as c:  # type: ignore[arg-type]
            r = await c.request(method, f"http://{host}{path}", headers=dict(headers or {}))
            return r.status_code, r.text

    async def direct(self, path: str = "/", headers: Mapping[str, str] | None = None,
                     local_address: str | None = None) -> tuple[int, str]:
        """One request straight to the server's sidecar inbound listener (no client sidecar)."""
        transport = httpx.AsyncHTTPTransport(local_address=local_address, verify=False)   # plain HTTP
        async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=10) as c:
            r = await c.get(f"http://{self.server.address}:9080{path}", headers=dict(headers or {}))
            return r.status_code, r.text

    def seen_headers(self, body: str) -> dict[str, str]:
        return {k.lower(): v for k, v in json.loads(body)["headers"].items()}


async def world(mesh: Mesh) -> World:
    await mesh.apply_yaml(SERVICES)
    server = await mesh.backend("server", namespace=NS, labels={"app": "server"}, sidecar=True)
    tcp = await mesh.backend("tcpserver", namespace=NS, port=9090, labels={"app": "tcpserver"}, sidecar=True)
    client = await mesh.sidecar(NS, "client-1", {"app": "client"})
    await mesh.wait_synced(timeout=15)
    return World(mesh, server, client, tcp)
