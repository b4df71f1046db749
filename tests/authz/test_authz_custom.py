"""CUSTOM action through real Envoys: ``envoyExtAuthzHttp`` and ``envoyExtAuthzGrpc`` providers from mesh
config, served by local authorizers (an HTTP server with Istio's sample semantics, ``x-ext-authz: allow``
passes, and a gRPC ``Authorization/Check`` server) declared to the mesh as ServiceEntries. Only requests a
CUSTOM rule matches are sent to them; their answer decides; DENY still applies after CUSTOM; the gRPC
provider also guards TCP chains; a CUSTOM policy naming an unknown provider denies what it matches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp import web
from authz_kit import NS, world
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2
from test_authz_table import Check, ap, check

from harness import Mesh, alloc_ip, free_port
from mizzen.core.mesh import MeshConfig, extension_providers

pytestmark = pytest.mark.e2e

EXT_IP, EXT_PORT = alloc_ip(), free_port()


@pytest.fixture
async def ext_authz() -> AsyncIterator[list[str]]:
    """The authorizer: allows requests carrying ``x-ext-authz: allow``; records the paths it was asked."""
    asked: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        asked.append(request.path_qs)
        if request.headers.get("x-ext-authz") == "allow":
            return web.Response(status=200, headers={"x-ext-authz-check-result": "allowed"})
        return web.Response(status=403, text="denied by ext_authz",
                            headers={"x-ext-authz-check-result": "denied"})
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, EXT_IP, EXT_PORT).start()
    try:
        yield asked
    finally:
        await runner.cleanup()


PROVIDERS = extension_providers([{"name": "sample-ext-authz-http", "envoyExtAuthzHttp": {
    "service": "ext-authz.example.local", "port": EXT_PORT, "includeRequestHeadersInCheck": ["x-ext-authz"],
    "headersToUpstreamOnAllow": ["x-ext-authz-check-result"],
    "headersToDownstreamOnDeny": ["x-ext-authz-check-result"]}}])

SERVICE_ENTRY = f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext-authz, namespace: {NS}}}
spec:
  hosts: [ext-authz.example.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {EXT_PORT}, name: http, protocol: HTTP}}]
  endpoints: [{{address: {EXT_IP}}}]
---
"""


def custom(provider: str, paths: str = '["/custom*"]') -> str:
    return ap("ext", f"  action: CUSTOM\n  provider: {{name: {provider}}}\n"
                     f"  rules: [{{to: [{{operation: {{paths: {paths}}}}}]}}]")


async def test_custom_action_with_a_local_ext_authz_server(ext_authz: list[str]) -> None:
    async with Mesh(mesh_config=MeshConfig(extension_providers=PROVIDERS)) as mesh:
        w = await world(mesh)
        await w.apply(SERVICE_ENTRY + custom("sample-ext-authz-http"))
        allow = (("x-ext-authz", "allow"),)
        await check(w, Check(200, "/custom/a", headers=allow))
        await check(w, Check(403, "/custom/b", denied_body="denied by ext_authz"))
        status, body = await w.status("/custom/c", headers=dict(allow))
        assert status == 200 and w.seen_headers(body)["x-ext-authz-check-result"] == "allowed"
        asked_before = len(ext_authz)
        await check(w, Check(200, "/other"))           # no CUSTOM rule matched: the authorizer is not asked
        assert len(ext_authz) == asked_before
        assert all(p.startswith("/custom") for p in ext_authz), ext_authz
        # DENY is evaluated after CUSTOM: an allowed request is still denied by a DENY rule
        await w.apply(ap("d", "  action: DENY\n  rules: [{to: [{operation: {paths: [/custom/secret]}}]}]"))
        await check(w, Check(403, "/custom/secret", headers=allow))
        await check(w, Check(200, "/custom/a", headers=allow))


async def test_custom_action_with_an_unknown_provider_denies_what_it_matches(mesh: Mesh) -> None:
    w = await world(mesh)
    await w.apply(custom("no-such-provider"))
    await check(w, Check(403, "/custom/a", headers=(("x-ext-authz", "allow"),)))
    await check(w, Check(200, "/other"))


class _GrpcAuthorizer(external_auth_pb2_grpc.AuthorizationServicer):
    """Envoy's ``envoy.service.auth.v3.Authorization/Check``: HTTP requests with ``x-ext-authz: allow`` pass,
    everything else (TCP connections included: they carry no HTTP attributes) is denied."""

    def __init__(self) -> None:
        self.checks: list[str] = []

    async def Check(self, request: Any, context: Any) -> Any:
        http = request.attributes.request.http
        self.checks.append(http.path or "tcp")
        if http.headers.get("x-ext-authz") == "allow":
            return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden), body="denied by grpc"))


async def test_custom_action_with_a_local_grpc_ext_authz_server() -> None:
    ip, port = alloc_ip(), free_port()
    authorizer = _GrpcAuthorizer()
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(authorizer, server)
    server.add_insecure_port(f"{ip}:{port}")
    await server.start()
    providers = extension_providers([{"name": "grpc-authz", "envoyExtAuthzGrpc": {
        "service": "ext-authz-grpc.example.local", "port": port}}])
    try:
        async with Mesh(mesh_config=MeshConfig(extension_providers=providers)) as mesh:
            w = await world(mesh)
            await w.apply(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext-authz-grpc, namespace: {NS}}}
spec:
  hosts: [ext-authz-grpc.example.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: {ip}}}]
---
""" + custom("grpc-authz") + ap("tcp", "  selector: {matchLabels: {app: tcpserver}}\n  action: CUSTOM\n"
                                      "  provider: {name: grpc-authz}\n  rules: [{}]"))
            await check(w, Check(200, "/custom/a", headers=(("x-ext-authz", "allow"),)))
            await check(w, Check(403, "/custom/b", denied_body="denied by grpc"))
            await check(w, Check(200, "/other"))
            assert "/other" not in authorizer.checks
            # the gRPC provider also guards TCP chains (network ext_authz): this authorizer denies them
            await check(w, Check(0, via="tcp"))
            assert "tcp" in authorizer.checks
    finally:
        await server.stop(None)
