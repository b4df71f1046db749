"""AuthorizationPolicy on a TCP port in netns mode (istio-init's REDIRECT capture, as root): the echo
Service's port becomes TCP, so the server sidecar's inbound chain (via 15006) is tcp_proxy with Envoy's
network RBAC filter. Rows: no policy, DENY by port, DENY and ALLOW with an HTTP-only field (Istio: the DENY
rule denies, the ALLOW rule is ignored), ALLOW by the client pod's IP, ALLOW by principal (plaintext: none).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from test_netns_redirect import _REASON, APP_PORT, World, world

pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
__all__ = ["world"]


def tcp_service(vip: str) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  clusterIP: {vip}
  selector: {{app: echo}}
  ports: [{{name: tcp, port: {APP_PORT}, targetPort: {APP_PORT}}}]
"""


def policy(spec: str) -> str:
    return ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\n"
            f"spec:\n{spec}\n")


async def connects(w: World) -> bool:
    """One HTTP request over the TCP port from the client pod (through both sidecars): answered or not."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
            f"http://{w.vip}:{APP_PORT}/"]
    rc, out = await w.net.run(w.client, argv, timeout=10)
    return rc == 0 and out.strip() == "200"


async def expect(w: World, allowed: bool, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while await connects(w) != allowed:
        assert time.monotonic() < deadline, f"connection {'refused' if allowed else 'allowed'}"
        await asyncio.sleep(0.3)
    assert await connects(w) == allowed


async def test_netns_tcp_authorization_rows(world: World) -> None:
    w = world
    await w.apply(tcp_service(w.vip))
    client_ip = w.client.ip
    rows = [
        ("no policy", None, True),
        ("DENY ports", f'  action: DENY\n  rules: [{{to: [{{operation: {{ports: ["{APP_PORT}"]}}}}]}}]',
         False),
        ("DENY with an HTTP-only field denies",
         "  action: DENY\n  rules: [{to: [{operation: {methods: [GET]}}]}]", False),
        ("ALLOW with an HTTP-only field is ignored",
         "  rules: [{to: [{operation: {methods: [GET]}}]}]", False),
        ("ALLOW the client pod's IP", f'  rules: [{{from: [{{source: {{ipBlocks: ["{client_ip}"]}}}}]}}]',
         True),
        ("ALLOW another IP", '  rules: [{from: [{source: {ipBlocks: ["192.0.2.1"]}}]}]', False),
        ("ALLOW any principal (plaintext has none)",
         '  rules: [{from: [{source: {principals: ["*"]}}]}]', False),
    ]
    failures = []
    for name, spec, allowed in rows:
        if spec is None:
            w.cp.store.delete([c.key for c in w.cp.store.snapshot().list("AuthorizationPolicy")])
            await w.cp.wait_synced(timeout=10)
        else:
            await w.apply(policy(spec))
        try:
            await expect(w, allowed)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, failures
