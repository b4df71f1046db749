"""The peer-identity rows (principals, namespaces, serviceAccounts, trustDomains, source.principal,
source.namespace, and their ``not*`` forms) with real certificates from ``security.ca`` and a real Envoy: the
inbound listener Mizzen generates for a sidecar, with the policies' RBAC filters, gets a TLS transport
socket set up here, and clients present SPIFFE certificates of different identities (or none), which
covers serviceAccounts/trustDomains too. One ALLOW rule per path, so one Envoy answers every row. The same
rows through real sidecars and the mesh's auto mTLS: test_authz_mtls.py."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from listeners_testkit import bootstrap, by_name, push_of, running_envoy, service, sidecar

from harness import alloc_ip, free_port
from mizzen.config.loader import load_text
from mizzen.core import filters
from mizzen.core.listeners import build_listeners
from mizzen.registry.model import Protocol
from mizzen.security.ca import CAOptions, CertificateAuthority
from mizzen.security.identity import Identity
from mizzen.security.pki import KeyAlgorithm, generate_key, make_csr, private_key_pem

pytestmark = pytest.mark.e2e

ROWS = {   # path -> (source or when, {client: expected status})
    "/principal": ("from: [{source: {principals: [cluster.local/ns/foo/sa/client]}}]",
                   {"client": 200, "other": 403, "bar": 403, "none": 403}),
    "/principal-prefix": ('from: [{source: {principals: ["cluster.local/ns/foo/*"]}}]',
                          {"client": 200, "other": 200, "bar": 403}),
    "/principal-suffix": ('from: [{source: {principals: ["*/sa/client"]}}]',
                          {"client": 200, "bar": 200, "other": 403}),
    "/principal-any": ('from: [{source: {principals: ["*"]}}]', {"client": 200, "bar": 200, "none": 403}),
    "/not-principal": ("from: [{source: {notPrincipals: [cluster.local/ns/foo/sa/other]}}]",
                       {"client": 200, "other": 403, "none": 200}),
    "/namespace": ("from: [{source: {namespaces: [foo]}}]",
                   {"client": 200, "other": 200, "bar": 403, "none": 403}),
    "/not-namespace": ("from: [{source: {notNamespaces: [bar]}}]", {"client": 200, "bar": 403}),
    "/sa": ("from: [{source: {serviceAccounts: [client]}}]", {"client": 200, "bar": 403, "other": 403}),
    "/sa-ns": ("from: [{source: {serviceAccounts: [bar/client]}}]", {"bar": 200, "client": 403}),
    "/trust-domain": ("from: [{source: {trustDomains: [cluster.local]}}]", {"client": 200, "none": 403}),
    "/when-principal": ("when: [{key: source.principal, values: [cluster.local/ns/bar/sa/client]}]",
                        {"bar": 200, "client": 403}),
    "/when-namespace": ("when: [{key: source.namespace, values: [bar]}]", {"bar": 200, "client": 403}),
    "/when-not-namespace": ("when: [{key: source.namespace, notValues: [bar]}]",
                            {"client": 200, "bar": 403}),
    "/deny-ns": (None, {"client": 200, "bar": 403}),       # the DENY policy below
}
CLIENTS = {"client": Identity("foo", "client"), "other": Identity("foo", "other"),
           "bar": Identity("bar", "client")}


def policies() -> str:
    rules = "\n".join(f"  - to: [{{operation: {{paths: [{path}]}}}}]\n    {cond}"
                      for path, (cond, _) in ROWS.items() if cond)
    return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: rows}}\nspec:\n"
            f"  rules:\n{rules}\n  - to: [{{operation: {{paths: [/deny-ns]}}}}]\n---\n"
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny}\nspec:\n"
            "  action: DENY\n  rules: [{from: [{source: {namespaces: [bar]}}], "
            "to: [{operation: {paths: [/deny-ns]}}]}]\n")


def issue(ca: CertificateAuthority, who: Identity, d: Path) -> tuple[Path, Path]:
    key = generate_key(KeyAlgorithm.ECDSA)
    chain = ca.sign(make_csr(key, who), [who], ttl=dt.timedelta(hours=1))
    stem = f"{who.namespace}-{who.service_account}"
    cert, keyf = d / f"{stem}.pem", d / f"{stem}.key"
    cert.write_text("".join(chain[:-1]))
    keyf.write_bytes(private_key_pem(key))
    return cert, keyf


@pytest.fixture
async def app() -> AsyncIterator[tuple[str, int]]:
    ip, port = alloc_ip(), free_port()
    a = web.Application()

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")
    a.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(a, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, ip, port).start()
    try:
        yield ip, port
    finally:
        await runner.cleanup()


async def test_peer_identity_rows_with_real_certificates(tmp_path: Path, app: tuple[str, int]) -> None:
    ca = CertificateAuthority.self_signed(tmp_path, CAOptions(root_key_algorithm=KeyAlgorithm.ECDSA))
    root = tmp_path / "root.pem"
    probe = Identity("foo", "x")
    root.write_text(ca.sign(make_csr(generate_key(KeyAlgorithm.ECDSA), probe), [probe])[-1])
    server_cert, server_key = issue(ca, Identity("foo", "server"), tmp_path)
    certs = {name: issue(ca, who, tmp_path) for name, who in CLIENTS.items()}

    loaded = load_text(policies(), "rows.yaml", "foo")
    assert loaded.ok, [str(e) for e in loaded.errors]
    ip = alloc_ip()
    proxy = sidecar(ip=ip, labels={"app": "server"}, ns="foo", name="server-1")
    push = push_of([service("server", [(9080, Protocol.HTTP)], ns="foo", selector={"app": "server"})],
                   loaded.configs)
    lds = by_name(build_listeners(proxy, push))
    inbound = lds[f"{ip}_9080"]
    # the TLS the test sets up: the server's SPIFFE certificate, client certificates verified against the CA
    tls = tls_pb2.DownstreamTlsContext()
    cert = tls.common_tls_context.tls_certificates.add()
    cert.certificate_chain.filename = str(server_cert)
    cert.private_key.filename = str(server_key)
    tls.common_tls_context.validation_context.trusted_ca.filename = str(root)
    inbound.filter_chains[0].transport_socket.CopyFrom(filters.tls_transport_socket(tls))
    admin = (alloc_ip(), free_port())
    config = bootstrap([inbound], admin, upstreams={"inbound|9080||": app})
    failures: list[str] = []
    async with running_envoy(config, tmp_path, (ip, 9080)):
        for name in ("none", *CLIENTS):
            ctx = ssl.create_default_context(cafile=str(root))
            ctx.check_hostname = False      # workload certificates carry only a SPIFFE URI
            if name != "none":
                ctx.load_cert_chain(*map(str, certs[name]))
            async with httpx.AsyncClient(verify=ctx, trust_env=False, timeout=10) as c:
                for path, (_, expected) in ROWS.items():
                    if name not in expected:
                        continue
                    r = await c.get(f"https://{ip}:9080{path}")
                    if r.status_code != expected[name]:
                        failures.append(f"{path} as {name}: {r.status_code} {r.text!r}, "
                                        f"want {expected[name]}")
    assert not failures, "\n".join(failures)
