"""DestinationRule ``tls.credentialName`` end to end: a real gateway Envoy originates MUTUAL TLS to a real
TLS server (Python ssl, client certificate required) with the client certificate and CA a Kubernetes
Secret of the gateway's namespace holds, served over SDS on the ADS stream. Before the Secret exists no
request is served and none arrives in clear (the cluster waits for its secret, as in Istio, so the
gateway's CDS stays un-ACKed meanwhile); rotating the Secret changes the client certificate the
server sees without restarting the gateway.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_e2e_gateway_credential import CA, Issued, generic_secret

from harness import Mesh, eventually
from mizzen.core import generate, sds
from mizzen.xds.resources import CLUSTER, SECRET

pytestmark = pytest.mark.e2e

generate.register(sds.SecretGenerator())   # as the control plane does when it starts (idempotent)

GW_NS = "istio-system"
API = "api.example.com"


class TlsServer:
    """HTTPS/1.1 on 127.0.0.1 requiring a client certificate; answers with the client's CN."""

    def __init__(self, leaf: Issued, client_ca: bytes, tmp: Path) -> None:
        (tmp / "srv.crt").write_bytes(leaf.cert_pem)
        (tmp / "srv.key").write_bytes(leaf.key_pem)
        (tmp / "srv.key").chmod(0o600)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(tmp / "srv.crt"), str(tmp / "srv.key"))
        self.ctx.load_verify_locations(cadata=client_ca.decode())
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.clients: list[str] = []
        self.failures: list[str] = []   # handshake failures by OpenSSL reason (HTTP_REQUEST: plaintext)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                raw.settimeout(5)
                with self.ctx.wrap_socket(raw, server_side=True) as s:
                    data = b""
                    while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
                        data += chunk
                    peer = s.getpeercert() or {}
                    cn = next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"), "")
                    self.clients.append(str(cn))
                    body = f"client={cn}".encode()
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                              % (len(body), body))
            except ssl.SSLError as e:
                self.failures.append(str(e.reason))
                raw.close()
            except OSError:
                raw.close()

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def pki() -> tuple[CA, CA]:
    return CA("upstream server CA"), CA("egress client CA")


@pytest.fixture
def server(pki: tuple[CA, CA], tmp_path: Path) -> Iterator[TlsServer]:
    server_ca, client_ca = pki
    srv = TlsServer(server_ca.issue(API), client_ca.pem, tmp_path)
    yield srv
    srv.stop()


def config(port: int) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api}}
spec:
  hosts: [{API}]
  location: MESH_EXTERNAL
  ports: [{{number: 443, name: http-tls, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http-tls: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: egress}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [{API}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api}}
spec:
  hosts: [{API}]
  gateways: [egress]
  http:
  - route: [{{destination: {{host: {API}, port: {{number: 443}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api}}
spec:
  host: {API}
  trafficPolicy:
    tls: {{mode: MUTUAL, credentialName: api-client, sni: {API}, subjectAltNames: [{API}]}}
"""


async def get(ip: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        return await c.get(f"http://{ip}:8080/", headers={"Host": API})


async def test_gateway_originates_mutual_tls_from_a_secret_and_rotates_it(
        mesh: Mesh, server: TlsServer, pki: tuple[CA, CA]) -> None:
    server_ca, client_ca = pki
    gw = await mesh.gateway(namespace=GW_NS, gateway_ports={80: 8080})
    await mesh.apply_yaml(config(server.port), namespace=GW_NS)
    node = next(n for n in mesh.cp.pusher.proxies if gw.spec.ip in n)

    # no Secret yet: the cluster waits for its credential (Envoy does not ACK that CDS update meanwhile)
    async def pushed() -> None:
        snap = mesh.cp.cache.get(node)
        assert snap is not None and any(API in n for n in snap.of(CLUSTER).resources)
    await eventually(pushed, timeout=10)

    async def listening() -> None:     # the gateway's :8080 listener is in Envoy, not only in our cache
        await get(gw.spec.ip)
    await eventually(listening, timeout=10)
    for _ in range(3):
        assert (await get(gw.spec.ip)).status_code != 200
    assert server.clients == [] and "HTTP_REQUEST" not in server.failures   # nothing in clear
    node = next(n for n in mesh.cp.pusher.proxies if gw.spec.ip in n)

    first = client_ca.issue("egress-1")
    await mesh.apply_yaml(generic_secret("api-client", GW_NS, {"cert": first.cert_pem, "key": first.key_pem,
                                                               "cacert": server_ca.pem}))
    await mesh.wait_synced()

    async def answers(cn: str) -> None:
        r = await get(gw.spec.ip)
        assert (r.status_code, r.text) == (200, f"client={cn}"), (r.status_code, r.text)
    await eventually(lambda: answers("egress-1"), timeout=20)
    snap = mesh.cp.cache.get(node)
    assert snap is not None
    assert sorted(snap.of(SECRET).resources) == ["kubernetes://api-client", "kubernetes://api-client-cacert"]
    pid, restarts = gw.pid, gw.restarts

    # rotation: a new client certificate in the same Secret, no restart
    second = client_ca.issue("egress-2")
    await mesh.apply_yaml(generic_secret("api-client", GW_NS, {"cert": second.cert_pem, "key": second.key_pem,
                                                               "cacert": server_ca.pem}))
    await mesh.wait_synced()
    await eventually(lambda: answers("egress-2"), timeout=20)
    assert (gw.pid, gw.restarts) == (pid, restarts)

    # a CA that does not sign the server's certificate: the gateway refuses the upstream (no fallback)
    rogue = CA("rogue CA")
    await mesh.apply_yaml(generic_secret("api-client", GW_NS, {"cert": second.cert_pem,
                                                               "key": second.key_pem, "cacert": rogue.pem}))
    await mesh.wait_synced()

    async def refused() -> None:
        assert (await get(gw.spec.ip)).status_code == 503
    await eventually(refused, timeout=20)
    assert set(server.clients) == {"egress-1", "egress-2"}
