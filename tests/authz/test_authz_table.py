"""AuthorizationPolicy semantics, one row per field or combination that changes the outcome, each row checked
with real requests through real Envoys fed by the real control plane: a client sidecar calling the server's
sidecar (HTTP), direct requests from chosen source addresses (ipBlocks), and a TCP (tcp_proxy) port for the
network RBAC filter. Principal/namespace rows here are the plaintext half (no peer identity -> no match);
the mTLS half, through sidecars with the mesh's own certificates, is test_authz_mtls.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from authz_kit import World, world
from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from google.protobuf.message import Message

from harness import Mesh, alloc_ip, eventually
from mizzen.core import plugins
from mizzen.core.filters import pack

pytestmark = pytest.mark.e2e

A = alloc_ip()     # source addresses for the ipBlocks rows (loopback, no root needed)
B = alloc_ip()


def ap(name: str, spec: str, namespace: str = "foo", annotations: str = "") -> str:
    meta = f"{{name: {name}, namespace: {namespace}{', annotations: ' + annotations if annotations else ''}}}"
    return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {meta}\n"
            f"spec:\n{spec}\n---\n")


@dataclass(frozen=True)
class Check:
    """One request and the status it must get. via: 'client' (through the client's sidecar), 'direct' (to
    the server's sidecar from address ``src``) or 'tcp' (the TCP port from ``src``; 0 = connection denied)."""

    expect: int
    path: str = "/"
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    via: str = "client"
    src: str | None = None
    host: str = "server.foo:9080"
    denied_body: str = "RBAC: access denied"    # the body a 403 must have


async def _once(w: World, c: Check) -> tuple[int, str]:
    if c.via == "tcp":
        return await w.tcp_status(c.src), ""
    if c.via == "direct":
        return await w.direct(c.path, dict(c.headers), local_address=c.src)
    return await w.status(c.path, c.method, dict(c.headers), host=c.host)


async def check(w: World, c: Check, timeout: float = 8.0) -> None:
    """The expected status (and a 403's body: Envoy's RBAC one unless said otherwise), then the same again.
    Every request opens a new connection to the server's sidecar (``ONE_REQUEST_PER_CONNECTION`` for the
    client's, a new client for 'direct' and 'tcp'), so it meets the filter chains of the config the proxies
    ACKed, never a drained one of the row before; the short poll covers a listener still warming."""
    def ok(got: tuple[int, str]) -> bool:
        return got[0] == c.expect and (c.expect != 403 or c.via == "tcp" or got[1] == c.denied_body)

    deadline = time.monotonic() + timeout
    got = await _once(w, c)
    while not ok(got) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        got = await _once(w, c)
    again = await _once(w, c)
    assert ok(got) and ok(again), f"{c}: got {got[0]} {got[1][:80]!r}, then {again[0]} {again[1][:80]!r}"


# the client sidecar opens a new upstream connection per request: a pooled connection would stay on the
# filter chain of the row before (Envoy drains a changed chain for --drain-time-s) and could answer for it
ONE_REQUEST_PER_CONNECTION = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: server, namespace: foo}
spec:
  host: server.foo.svc.cluster.local
  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}
"""

GET_ONLY = "  rules: [{to: [{operation: {methods: [GET]}}]}]"

ROWS: list[tuple[str, str, list[Check]]] = [
    ("no policy allows", "", [Check(200), Check(200, method="POST"), Check(200, via="tcp")]),
    ("allow-nothing: empty spec", ap("none", "  {}"), [Check(403), Check(403, method="POST")]),
    ("DENY with an empty rule denies all", ap("d", "  action: DENY\n  rules: [{}]"), [Check(403)]),
    ("ALLOW methods", ap("a", GET_ONLY), [Check(200), Check(403, method="POST")]),
    ("ALLOW notMethods", ap("a", "  rules: [{to: [{operation: {notMethods: [POST]}}]}]"),
     [Check(200, method="PUT"), Check(403, method="POST")]),
    ("ALLOW paths exact", ap("a", "  rules: [{to: [{operation: {paths: [/exact]}}]}]"),
     [Check(200, "/exact"), Check(403, "/exact/more")]),
    ("ALLOW paths prefix", ap("a", '  rules: [{to: [{operation: {paths: ["/api/*"]}}]}]'),
     [Check(200, "/api/v1"), Check(403, "/other")]),
    ("ALLOW paths suffix", ap("a", '  rules: [{to: [{operation: {paths: ["*/info"]}}]}]'),
     [Check(200, "/x/info"), Check(403, "/x/other")]),
    ("ALLOW paths presence", ap("a", '  rules: [{to: [{operation: {paths: ["*"]}}]}]'), [Check(200, "/any")]),
    ("ALLOW path template", ap("a", '  rules: [{to: [{operation: {paths: ["/api/{*}/info"]}}]}]'),
     [Check(200, "/api/v1/info"), Check(403, "/api/v1/x/info")]),
    ("DENY notPaths", ap("d", '  action: DENY\n  rules: [{to: [{operation: {notPaths: ["/public*"]}}]}]'),
     [Check(200, "/public/x"), Check(403, "/private")]),
    ("ALLOW hosts suffix", ap("a", '  rules: [{to: [{operation: {hosts: ["*.svc.cluster.local:9080"]}}]}]'),
     [Check(200, host="server.foo.svc.cluster.local:9080"), Check(403, host="server.foo:9080")]),
    ("DENY notHosts",
     ap("d", '  action: DENY\n  rules: [{to: [{operation: {notHosts: ["server.foo:9080"]}}]}]'),
     [Check(200, host="server.foo:9080"), Check(403, host="server.foo.svc.cluster.local:9080")]),
    ("ALLOW ports", ap("a", '  rules: [{to: [{operation: {ports: ["9080"]}}]}]'), [Check(200)]),
    ("ALLOW other ports", ap("a", '  rules: [{to: [{operation: {ports: ["9999"]}}]}]'), [Check(403)]),
    ("DENY notPorts", ap("d", '  action: DENY\n  rules: [{to: [{operation: {notPorts: ["9999"]}}]}]'),
     [Check(403)]),
    ("DENY when header exact", ap("d", '  action: DENY\n  rules: [{when: [{key: "request.headers[x-user]", '
                                      'values: [bad]}]}]'),
     [Check(403, headers=(("x-user", "bad"),)), Check(200, headers=(("x-user", "good"),)), Check(200)]),
    ("DENY when header absent (notValues *)",
     ap("d", '  action: DENY\n  rules: [{when: [{key: "request.headers[x-user]", notValues: ["*"]}]}]'),
     [Check(403), Check(200, headers=(("x-user", "x"),))]),
    ("ALLOW when header prefix",
     ap("a", '  rules: [{when: [{key: "request.headers[x-user]", values: ["adm*"]}]}]'),
     [Check(200, headers=(("x-user", "admin"),)), Check(403, headers=(("x-user", "user"),))]),
    ("ALLOW when destination.port", ap("a", '  rules: [{when: [{key: destination.port, values: ["9080"]}]}]'),
     [Check(200)]),
    ("ALLOW when destination.port notValues",
     ap("a", '  rules: [{when: [{key: destination.port, notValues: ["9080"]}]}]'), [Check(403)]),
    ("ALLOW principals * needs a peer identity (plaintext: none)",
     ap("a", '  rules: [{from: [{source: {principals: ["*"]}}]}]'), [Check(403)]),
    ("DENY notPrincipals * denies plaintext",
     ap("d", '  action: DENY\n  rules: [{from: [{source: {notPrincipals: ["*"]}}]}]'), [Check(403)]),
    ("ALLOW namespaces needs a peer identity",
     ap("a", '  rules: [{from: [{source: {namespaces: ["foo"]}}]}]'), [Check(403)]),
    ("DENY notNamespaces denies plaintext",
     ap("d", '  action: DENY\n  rules: [{from: [{source: {notNamespaces: ["foo"]}}]}]'), [Check(403)]),
    ("ALLOW ipBlocks", ap("a", f'  rules: [{{from: [{{source: {{ipBlocks: ["{A}/32"]}}}}]}}]'),
     [Check(200, via="direct", src=A), Check(403, via="direct", src=B)]),
    ("DENY notIpBlocks",
     ap("d", f'  action: DENY\n  rules: [{{from: [{{source: {{notIpBlocks: ["{A}"]}}}}]}}]'),
     [Check(200, via="direct", src=A), Check(403, via="direct", src=B)]),
    ("ALLOW remoteIpBlocks", ap("a", f'  rules: [{{from: [{{source: {{remoteIpBlocks: ["{A}"]}}}}]}}]'),
     [Check(200, via="direct", src=A), Check(403, via="direct", src=B)]),
    ("ALLOW when source.ip", ap("a", f'  rules: [{{when: [{{key: source.ip, values: ["{B}"]}}]}}]'),
     [Check(403, via="direct", src=A), Check(200, via="direct", src=B)]),
    ("DENY beats ALLOW",
     ap("a", '  rules: [{to: [{operation: {paths: ["/x/*"]}}]}]')
     + ap("d", '  action: DENY\n  rules: [{to: [{operation: {paths: ["/x/secret"]}}]}]'),
     [Check(200, "/x/ok"), Check(403, "/x/secret"), Check(403, "/y")]),
    ("ALLOW policies are OR-ed",
     ap("a1", "  rules: [{to: [{operation: {paths: [/a]}}]}]")
     + ap("a2", "  rules: [{to: [{operation: {paths: [/b]}}]}]"),
     [Check(200, "/a"), Check(200, "/b"), Check(403, "/c")]),
    ("fields in one rule are AND-ed",
     ap("a", "  rules: [{to: [{operation: {paths: [/a], methods: [GET]}}]}]"),
     [Check(200, "/a"), Check(403, "/a", "POST"), Check(403, "/b")]),
    ("mesh-wide DENY in the root namespace",
     ap("d", "  action: DENY\n  rules: [{to: [{operation: {paths: [/root-deny]}}]}]",
        namespace="istio-system"),
     [Check(403, "/root-deny"), Check(200, "/ok")]),
    ("mesh-wide allow-nothing, namespace ALLOW adds", ap("none", "  {}", namespace="istio-system")
     + ap("a", "  rules: [{to: [{operation: {paths: [/ok]}}]}]"), [Check(200, "/ok"), Check(403, "/no")]),
    ("another namespace's policy does not apply", ap("none", "  {}", namespace="bar"), [Check(200)]),
    ("selector that does not match", ap("none", "  selector: {matchLabels: {app: other}}"), [Check(200)]),
    ("selector that matches",
     ap("a", "  selector: {matchLabels: {app: server}}\n  rules: [{to: [{operation: {paths: [/sel]}}]}]"),
     [Check(200, "/sel"), Check(403, "/other")]),
    ("dry-run DENY only shadows",
     ap("d", "  action: DENY\n  rules: [{}]", annotations='{"istio.io/dry-run": "true"}'),
     [Check(200)]),
    ("dry-run allow-nothing only shadows", ap("none", "  {}", annotations='{"istio.io/dry-run": "true"}'),
     [Check(200)]),
    ("AUDIT does not deny", ap("au", "  action: AUDIT\n  rules: [{}]"), [Check(200)]),
    # TCP port (network RBAC): HTTP-only fields as Istio documents
    ("TCP: DENY ports", ap("d", '  action: DENY\n  rules: [{to: [{operation: {ports: ["9090"]}}]}]'),
     [Check(0, via="tcp")]),
    ("TCP: DENY with an HTTP-only field denies (field dropped)",
     ap("d", "  selector: {matchLabels: {app: tcpserver}}\n  action: DENY\n"
             "  rules: [{to: [{operation: {methods: [GET]}}]}]"), [Check(0, via="tcp"), Check(200)]),
    ("TCP: ALLOW with an HTTP-only field is ignored (nothing allowed)",
     ap("a", "  selector: {matchLabels: {app: tcpserver}}\n" + GET_ONLY), [Check(0, via="tcp")]),
    ("TCP: ALLOW ipBlocks", ap("a", f'  rules: [{{from: [{{source: {{ipBlocks: ["{A}"]}}}}]}}]'),
     [Check(200, via="tcp", src=A), Check(0, via="tcp", src=B)]),
    ("TCP: ALLOW ports and HTTP-only methods: whole rule dropped",
     ap("a", '  selector: {matchLabels: {app: tcpserver}}\n'
             '  rules: [{to: [{operation: {ports: ["9090"]}}]}, {to: [{operation: {methods: [GET]}}]}]'),
     [Check(200, via="tcp")]),
]


async def test_authorization_policy_table(mesh: Mesh) -> None:
    w = await world(mesh)
    await w.apply(ONE_REQUEST_PER_CONNECTION)
    failures: list[str] = []
    for name, policies, checks in ROWS:
        if policies:
            await w.apply(policies)
        try:
            for c in checks:
                try:
                    await check(w, c)
                except AssertionError as e:
                    failures.append(f"{name}: {e}")
        finally:
            if policies:
                await w.delete(policies)
    assert not failures, "\n".join(failures)


class _HintLog(plugins.ListenerPlugin):
    """A test plugin (the core.plugins seam) logging each inbound request's path and access-log hint."""

    name = "test.audit-log"

    def __init__(self, path: Path) -> None:
        self.path = path

    def access_logs(self, ctx: plugins.ListenerContext) -> Sequence[Message]:
        if ctx.direction is not plugins.Direction.INBOUND:
            return ()
        fmt = substitution_format_string_pb2.SubstitutionFormatString()
        fmt.text_format_source.inline_string = (
            "%REQ(:PATH)% %DYNAMIC_METADATA(envoy.common:access_log_hint)%\n")
        cfg = file_pb2.FileAccessLog(path=str(self.path), log_format=fmt)
        return [accesslog_pb2.AccessLog(name="envoy.access_loggers.file", typed_config=pack(cfg))]


async def test_audit_marks_the_access_log_hint(mesh: Mesh, tmp_path: Path) -> None:
    """AUDIT is an RBAC LOG filter: matching requests pass with ``envoy.common:access_log_hint`` true,
    others get false."""
    log = tmp_path / "access.log"
    plugins.register(_HintLog(log))
    try:
        w = await world(mesh)
        await w.apply(ap("au", "  action: AUDIT\n  rules: [{to: [{operation: {paths: [/audited]}}]}]"))
        await check(w, Check(200, "/audited"))
        await check(w, Check(200, "/not-audited"))

        async def logged() -> None:
            lines = log.read_text().splitlines() if log.exists() else []
            assert "/audited true" in lines and "/not-audited false" in lines, lines
        await eventually(logged, timeout=15)   # the harness's Envoys flush file logs every 200 ms
    finally:
        plugins.unregister(_HintLog.name)
