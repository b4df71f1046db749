"""RequestAuthentication through real Envoys with Istio's sample JWKS and tokens: valid -> 200, none -> 200
unless a policy requires a request principal (then 403), invalid / expired / foreign issuer / wrong audience
-> 401; claims, request principals and audiences in AuthorizationPolicy; jwksUri fetched by Envoy from a
local JWKS server declared as a ServiceEntry; token locations and the outputs to the application.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from authz_kit import DEMO_JWT, GROUPS_JWT, ISSUER, JWKS, NS, World, sample_file, world
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from test_authz_table import Check, ap, check

from harness import Mesh, alloc_ip, free_port

pytestmark = pytest.mark.e2e

KID = json.loads(JWKS)["keys"][0]["kid"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims: dict[str, object]) -> str:
    """A JWT signed with Istio's sample key (the one jwks.json publishes)."""
    key = serialization.load_pem_private_key(sample_file("key.pem").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    head = _b64(json.dumps({"alg": "RS256", "kid": KID, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{_b64(sig)}"


NOW = int(time.time())
EXPIRED = sign({"iss": ISSUER, "sub": ISSUER, "iat": NOW - 7200, "exp": NOW - 3600})
FOREIGN = sign({"iss": "someone-else", "sub": "x", "exp": NOW + 3600})
TAMPERED = DEMO_JWT[:-6] + ("AAAAAA" if not DEMO_JWT.endswith("AAAAAA") else "BBBBBB")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def ra(name: str, rules: str) -> str:
    return (f"apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, "
            f"namespace: {NS}}}\nspec:\n  selector: {{matchLabels: {{app: server}}}}\n"
            f"  jwtRules:\n{rules}\n---\n")


INLINE = ra("jwt", f"  - issuer: {ISSUER}\n    jwks: {json.dumps(JWKS)}")
REQUIRE_ANY = ap("require", '  rules: [{from: [{source: {requestPrincipals: ["*"]}}]}]')

ROWS: list[tuple[str, str, list[Check]]] = [
    ("inline JWKS: valid, none, invalid, expired, foreign issuer", INLINE, [
        Check(200, headers=bearer(DEMO_JWT)), Check(200), Check(401, headers=bearer(TAMPERED)),
        Check(401, headers=bearer(EXPIRED)), Check(401, headers=bearer(FOREIGN))]),
    ("requestPrincipals iss/sub required",
     INLINE + ap("a", f'  rules: [{{from: [{{source: {{requestPrincipals: '
                                                            f'["{ISSUER}/{ISSUER}"]}}}}]}}]'),
     [Check(403), Check(200, headers=bearer(DEMO_JWT))]),
    ("requestPrincipals * required", INLINE + REQUIRE_ANY,
     [Check(403), Check(200, headers=bearer(DEMO_JWT))]),
    ("DENY notRequestPrincipals *", INLINE + ap("d", '  action: DENY\n  rules: [{from: [{source: '
                                                     '{notRequestPrincipals: ["*"]}}]}]'),
     [Check(403), Check(200, headers=bearer(DEMO_JWT))]),
    ("requestPrincipals of another subject",
     INLINE + ap("a", f'  rules: [{{from: [{{source: {{requestPrincipals: '
                                                              f'["{ISSUER}/other"]}}}}]}}]'),
     [Check(403, headers=bearer(DEMO_JWT))]),
    ("claims: groups list", INLINE + ap("a", '  rules: [{when: [{key: "request.auth.claims[groups]", '
                                             'values: [group1]}]}]'),
     [Check(200, headers=bearer(GROUPS_JWT)), Check(403, headers=bearer(DEMO_JWT)), Check(403)]),
    ("claims: string claim",
     INLINE + ap("a", '  rules: [{when: [{key: "request.auth.claims[foo]", values: [bar]}]}]'),
     [Check(200, headers=bearer(DEMO_JWT)), Check(403)]),
    ("when request.auth.principal", INLINE + ap("a", f'  rules: [{{when: [{{key: request.auth.principal, '
                                                     f'values: ["{ISSUER}/*"]}}]}}]'),
     [Check(200, headers=bearer(DEMO_JWT)), Check(403)]),
    ("audiences the token lacks (Envoy answers 403, as in Istio)",
     ra("jwt", f"  - issuer: {ISSUER}\n    audiences: [other]\n"
                                            f"    jwks: {json.dumps(JWKS)}"),
     [Check(403, headers=bearer(DEMO_JWT), denied_body="Audiences in Jwt are not allowed"), Check(200)]),
    ("fromHeaders", ra("jwt", f"  - issuer: {ISSUER}\n    jwks: {json.dumps(JWKS)}\n"
                              "    fromHeaders: [{name: x-jwt}]") + REQUIRE_ANY,
     [Check(200, headers=(("x-jwt", DEMO_JWT),)), Check(403, headers=bearer(DEMO_JWT))]),
    ("fromParams", ra("jwt", f"  - issuer: {ISSUER}\n    jwks: {json.dumps(JWKS)}\n    fromParams: [tok]")
     + REQUIRE_ANY, [Check(200, f"/?tok={DEMO_JWT}"), Check(403, headers=bearer(DEMO_JWT))]),
    ("presence: REQUIRED", ra("jwt", f"  - issuer: {ISSUER}\n    jwks: {json.dumps(JWKS)}\n"
                                     "    presence: REQUIRED"),
     [Check(401), Check(200, headers=bearer(DEMO_JWT))]),
    ("jwksUri not served by any mesh service: tokens refused",
     ra("jwt", f"  - issuer: {ISSUER}\n    jwksUri: http://nowhere.example:8000/jwks.json"),
     [Check(401, headers=bearer(DEMO_JWT)), Check(200)]),
]


@pytest.fixture
async def jwks_server() -> AsyncIterator[tuple[str, int]]:
    """Istio's sample jwks.json served on loopback (instead of raw.githubusercontent.com)."""
    ip, port = alloc_ip(), free_port()
    app = web.Application()
    fetched: list[int] = []

    async def jwks(_: web.Request) -> web.Response:
        fetched.append(1)
        return web.Response(text=JWKS, content_type="application/json")
    app.router.add_get("/jwks.json", jwks)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, ip, port).start()
    try:
        yield ip, port
    finally:
        await runner.cleanup()


async def test_request_authentication_table(mesh: Mesh) -> None:
    w = await world(mesh)
    failures: list[str] = []
    for name, policies, checks in ROWS:
        await w.apply(policies)
        try:
            for c in checks:
                try:
                    await check(w, c)
                except AssertionError as e:
                    failures.append(f"{name}: {e}")
        finally:
            await w.delete(policies)
    assert not failures, "\n".join(failures)


async def test_jwks_uri_fetched_by_envoy_from_a_local_server(mesh: Mesh,
                                                              jwks_server: tuple[str, int]) -> None:
    ip, port = jwks_server
    w = await world(mesh)
    await w.apply(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: jwks, namespace: {NS}}}
spec:
  hosts: [jwks.example.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints: [{{address: {ip}}}]
---
""" + ra("jwt", f"  - issuer: {ISSUER}\n    jwksUri: http://jwks.example.local:{port}/jwks.json")
        + REQUIRE_ANY)
    await check(w, Check(200, headers=bearer(DEMO_JWT)), timeout=15)
    await check(w, Check(401, headers=bearer(TAMPERED)))
    await check(w, Check(403))


async def _headers_seen(w: World, token: str) -> dict[str, str]:
    status, body = await w.status("/", headers=dict(bearer(token)))
    assert status == 200, body
    return w.seen_headers(body)


async def test_outputs_to_the_application(mesh: Mesh) -> None:
    w = await world(mesh)
    await w.apply(INLINE)
    await check(w, Check(200, headers=bearer(DEMO_JWT)))
    assert "authorization" not in await _headers_seen(w, DEMO_JWT)    # forwardOriginalToken: false
    await w.apply(ra("jwt", f"  - issuer: {ISSUER}\n    jwks: {json.dumps(JWKS)}\n"
                            "    forwardOriginalToken: true\n"
                            "    outputPayloadToHeader: x-jwt-payload\n"
                            "    outputClaimToHeaders: [{header: x-foo, claim: foo}]"))

    async def seen() -> dict[str, str]:
        last = ""
        for _ in range(40):
            # while Envoy moves to the new inbound filter chain it drains the old one's connections: a
            # request on a pooled keep-alive connection it closes may fail (503, "connection termination")
            status, body = await w.status("/", headers=dict(bearer(DEMO_JWT)))
            if status == 200:
                h = w.seen_headers(body)
                if "x-foo" in h:
                    return h
            last = f"{status}: {body[:200]}"
            await asyncio.sleep(0.1)   # (not time.sleep: the control plane and the app run on this loop)
        raise AssertionError(f"outputs never seen (last: {last})")
    h = await seen()
    assert h["x-foo"] == "bar"
    assert h["authorization"] == f"Bearer {DEMO_JWT}"
    payload = json.loads(base64.urlsafe_b64decode(h["x-jwt-payload"] + "=" * (-len(h["x-jwt-payload"]) % 4)))
    assert payload["iss"] == ISSUER and payload["foo"] == "bar"
