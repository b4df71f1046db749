"""Two real sidecars with workload identities from the control plane (``Mesh(identities=True)``, as the demo
runs them): each agent gets its pod credential, serves SDS to its Envoy and forwards xDS over TLS. Both pods
carry Istio's ``security.istio.io/tlsMode: istio`` label (as the runner's injected pods do), so the client
sidecar speaks auto mTLS to the server sidecar, whose app sees the caller's certificate in
``x-forwarded-client-cert`` (``URI`` the SPIFFE ID, ``Cert`` the PEM, so its serial).

Issue 10's proofs: with a 30 s certificate lifetime (renewal at half of it), continuous requests see 3
distinct client-certificate serials at the peer and none fails; a three-step root rotation (stage, activate,
drop) through the two sidecars drops no request either.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Callable

import httpx
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from harness import Mesh
from mizzen.agent.envoy import Agent
from mizzen.registry.model import ISTIO_TLS_MODE, TLS_MODE_LABEL
from mizzen.security.identity import Identity
from mizzen.security.nodeagent.cache import SecretManager
from mizzen.security.pki import KeyAlgorithm

pytestmark = pytest.mark.e2e

NS = "bookinfo"
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
# a TLS handshake per request, so the peer sees the client's current certificate (a connection keeps the
# certificate it was opened with); no tls block: auto mTLS stays on, as in Istio
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews.bookinfo.svc.cluster.local
  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}
"""
CALLER = Identity(NS, "default").uri


def xfcc_fields(value: str) -> dict[str, str]:
    """The last element of an ``x-forwarded-client-cert`` header (the hop to this app) as key -> value.
    Quoted values may hold ``,`` and ``;`` (Envoy quotes them); ``Cert`` stays URL-encoded."""
    elements, current, quoted = [], "", False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            elements.append(current)
            current = ""
            continue
        current += ch
    elements.append(current)
    out: dict[str, str] = {}
    field, quoted = "", False
    for ch in elements[-1] + ";":
        if ch == '"':
            quoted = not quoted
            continue
        if ch == ";" and not quoted:
            key, _, val = field.partition("=")
            out[key.strip()] = val.strip()
            field = ""
            continue
        field += ch
    return out


def peer_serial(fields: dict[str, str]) -> str:
    """The serial (lowercase hex) of the client certificate the server sidecar saw."""
    cert = x509.load_pem_x509_certificate(urllib.parse.unquote(fields["Cert"]).encode())
    return format(cert.serial_number, "x")


class Traffic:
    """Requests from the client sidecar to ``reviews`` one after the other, every ~30 ms, counting failures
    and recording the client certificates the server's app was shown."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.ok = self.failures = 0
        self.serials: list[str] = []         # distinct, in the order seen
        self.uris: set[str] = set()
        self.errors: list[str] = []

    async def one(self) -> None:
        try:
            r = await self.http.get("http://reviews.bookinfo:9080/")
        except httpx.HTTPError as e:
            self.failures += 1
            self.errors.append(repr(e))
            return
        if r.status_code != 200:
            self.failures += 1
            self.errors.append(f"{r.status_code} {r.text[:200]}")
            return
        self.ok += 1
        headers = {k.lower(): v for k, v in r.json()["headers"].items()}
        fields = xfcc_fields(headers["x-forwarded-client-cert"])     # KeyError: plaintext, no mTLS
        self.uris.add(fields["URI"])
        serial = peer_serial(fields)
        if serial not in self.serials:
            self.serials.append(serial)

    async def until(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, ("timed out", self.ok, self.failures, self.serials)
            await self.one()
            await asyncio.sleep(0.03)


async def first_answer(http: httpx.AsyncClient) -> None:
    """The first 200 once the route and endpoints are there (before the counted traffic)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if (await http.get("http://reviews.bookinfo:9080/")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("no answer through the client sidecar in 20 s")


async def two_sidecars(mesh: Mesh) -> tuple[Agent, Agent]:
    await mesh.apply_yaml(SERVICE)
    labels = {"app": "reviews", "version": "v1", TLS_MODE_LABEL: ISTIO_TLS_MODE}
    server = await mesh.backend("reviews", namespace=NS, sidecar=True, labels=labels)
    client = await mesh.sidecar(NS, "productpage-v1-6b746f74dc-twosc",
                                {"app": "productpage", TLS_MODE_LABEL: ISTIO_TLS_MODE})
    await mesh.wait_synced(timeout=20)
    assert server.sidecar is not None
    for agent in (client, server.sidecar):
        assert agent.identity is not None and agent.identity.agent is not None
        await agent.identity.agent.manager.wait_ready(20)
    return client, server.sidecar


def manager_of(agent: Agent) -> SecretManager:
    assert agent.identity is not None and agent.identity.agent is not None
    return agent.identity.agent.manager


async def test_rotation_with_a_30s_ttl_shows_3_serials_and_drops_no_request() -> None:
    async with Mesh(identities=True, secret_ttl_s=30) as mesh:
        client, server = await two_sidecars(mesh)
        async with mesh.client_via(client, timeout=5) as http:
            await first_answer(http)
            traffic = Traffic(http)
            # renewal at about half the TTL: the third certificate comes ~30 s after the first; the traffic
            # goes on until the server sidecar has rotated twice too
            await traffic.until(lambda: len(traffic.serials) >= 3
                                and len(set(manager_of(server).stats.served_serials)) >= 3, timeout=60)
        assert traffic.failures == 0 and traffic.ok > 100, (traffic.failures, traffic.ok, traffic.errors[:3])
        assert traffic.uris == {CALLER}, traffic.uris          # auto mTLS: the server saw the caller's ID
        # the serials the peer saw are the ones the client's agent served to its Envoy
        assert set(traffic.serials) <= set(manager_of(client).stats.served_serials), traffic.serials
        # the streams are authenticated as the pods' identities
        principals = {s.node_id: s.principal for s in mesh.cp.ads._live}
        assert principals[client.node_id] == (CALLER,)


async def test_root_rotation_through_two_sidecars_drops_no_request() -> None:
    # a 4 s lifetime leaves 2 s for each renewal; an RSA 2048 key takes up to a few hundred ms of CPU to
    # generate, which on a loaded machine was seen to outlast those 2 s (Envoy then served an expired
    # certificate and the peer refused it); P-256 keys (Istio's ECC option) take a millisecond
    async with Mesh(identities=True, secret_ttl_s=4, secret_key_algorithm=KeyAlgorithm.ECDSA) as mesh:
        client, server = await two_sidecars(mesh)
        assert mesh.cp.identity is not None
        ca = mesh.cp.identity.ca
        managers = [manager_of(client), manager_of(server)]
        old_root = ca.trust_bundle.roots[0]

        def all_trust(n: int) -> bool:
            return all(m.current is not None and len(m.current.roots) == n for m in managers)

        def all_signed_by(root: x509.Certificate) -> bool:
            for m in managers:
                if m.current is None:
                    return False
                leaf = x509.load_pem_x509_certificates(m.current.chain_pem.encode())[0]
                try:
                    leaf.verify_directly_issued_by(root)
                except (InvalidSignature, ValueError, TypeError):
                    return False
            return True

        async with mesh.client_via(client, timeout=5) as http:
            await first_answer(http)
            traffic = Traffic(http)
            await traffic.until(lambda: traffic.ok >= 20, timeout=20)
            new_root = ca.stage_root()                       # 1. the new root joins every trust bundle
            await traffic.until(lambda: all_trust(2), timeout=20)
            ca.activate_root()                               # 2. it signs the renewed certificates
            await traffic.until(lambda: all_signed_by(new_root), timeout=20)
            seen_new = len(traffic.serials)
            # the peer saw a certificate from the new root
            await traffic.until(lambda: len(traffic.serials) > seen_new, timeout=20)
            ca.drop_root(format(old_root.serial_number, "x"))  # 3. the old root leaves the bundles
            await traffic.until(lambda: all_trust(1), timeout=20)
            await traffic.until(lambda: traffic.ok >= 200, timeout=20)
        assert traffic.failures == 0, (traffic.failures, traffic.ok, traffic.errors[:3])
        assert traffic.uris == {CALLER}, traffic.uris
        for m in managers:
            assert m.current is not None and len(m.current.roots.roots) == 1
            assert m.current.roots.contains(new_root)
