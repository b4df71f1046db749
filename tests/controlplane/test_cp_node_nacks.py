"""What only the node can know (a Gateway port already in use, a ``bind`` address not on the machine, TLS
files that are missing, as in Istio's own sample gateway) is reported per proxy with a readable reason, and
does not block the gateway's other listeners (issue 8, item 3). Real Envoy gateway, real sockets."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from harness import Mesh, eventually
from mizzen.core.mesh import MeshConfig
from mizzen.xds.status import nack_reason

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: BUSY, name: http-busy, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 9998, name: http-elsewhere, protocol: HTTP}
    bind: 10.244.254.254
    hosts: ["*"]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls:
      mode: SIMPLE
      serverCertificate: /etc/istio/ingressgateway-certs/tls.crt
      privateKey: /etc/istio/ingressgateway-certs/tls.key
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: web}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - destination: {host: web, port: {number: 9080}}
"""


@pytest.fixture
async def open_mesh() -> AsyncIterator[Mesh]:
    """A mesh whose Gateways may bind outside loopback (the opt-in), so a bind address that is not on this
    machine (inside the tests' 10.244.0.0/16; nothing is sent there) reaches Envoy."""
    async with Mesh(mesh_config=MeshConfig(allow_external_bind=True)) as m:
        yield m


async def test_node_only_rejections_have_readable_reasons(open_mesh: Mesh) -> None:
    mesh = open_mesh
    await mesh.backend("web", namespace="default")
    gw = await mesh.gateway(gateway_ports={80: 8080, 443: 8443})
    with socket.socket() as busy:
        busy.bind((gw.spec.ip, 0))
        busy.listen()
        port = busy.getsockname()[1]
        await mesh.apply_yaml(GATEWAY.replace("BUSY", str(port)), namespace="default")

        async def nacked() -> dict[str, Any]:
            async with mesh.api_client() as api:
                (entry,) = [e for e in (await api.get("/debug/syncz")).json() if e["proxy"] == gw.node_id]
                nack = entry["types"]["LDS"]["nack"]
                assert nack is not None
                return dict(nack)

        nack = await eventually(nacked, timeout=15)
        reason = nack["reason"]
        assert reason == nack_reason(nack["message"]) and "\n" not in reason
        assert f"cannot bind '{gw.spec.ip}:{port}': Address already in use" in reason
        assert "cannot bind '10.244.254.254:9998': Cannot assign requested address" in reason
        assert "/etc/istio/ingressgateway-certs/tls" in reason
        # the listeners Envoy could build still serve
        async with mesh.gateway_client(gw) as http:
            async def served() -> None:
                r = await http.get("/anything", headers={"Host": "example.com"})
                assert r.status_code == 200 and r.json()["service"] == "web"

            await eventually(served, timeout=10)
        async with mesh.api_client() as api:
            nacks = (await api.get("/debug/push_status")).json()["nacks"]
            assert [(n["type"], n["reason"]) for n in nacks] == [("LDS", reason)]


def test_reason_of_a_truncated_proto_dump_is_said() -> None:
    dump = 'goo.gle/debugonly    \nname: "http_proxy"\nvirtual_hosts {\n  name: "x"\n' + "a" * 4000
    assert nack_reason(dump + "...(truncated)") == (
        'Envoy rejected the resource "http_proxy", but its message was cut off at 4 KiB before the reason '
        "(run the config through `envoy --mode validate`, or look for the field in the rejected version)")
    full = (dump + "\n: Proto constraint validation failed ("
            "RouteConfigurationValidationError.VirtualHosts[0]: embedded message failed validation | caused "
            "by HeaderValueValidationError.Value: value length must be at most 16384 bytes)\n")
    assert nack_reason(full) == ("invalid config: HeaderValueValidationError.Value: value length must be at "
                                 "most 16384 bytes (in RouteConfigurationValidationError.VirtualHosts[0])")
    assert len(nack_reason("x" * 10_000)) == 500
