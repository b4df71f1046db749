"""The peer-identity rows of AuthorizationPolicy (principals, notPrincipals, namespaces, notNamespaces,
``when`` source.principal / source.namespace, ALLOW and DENY) through the mesh's own mTLS: the control plane
runs the CA (``Mesh(identities=True)``), every sidecar gets its SPIFFE certificate over SDS from its agent,
and auto mTLS carries the callers' identities from real client sidecars to the server's sidecar, whose RBAC
filters decide. Clients: ``foo/client``, ``foo/other`` and ``bar/client`` sidecars, and ``none`` (a
plaintext request from outside the mesh, which the default PERMISSIVE mode accepts). Also the connection's
rows: connection.sni (only an mTLS caller sends one), destination.ip, destination.port. One policy set with a
rule per path, so one push answers every row; ``/open`` proves each sidecar caller arrived over mTLS with
its own identity (the app sees it in ``X-Forwarded-Client-Cert``)."""

from __future__ import annotations

import json

import httpx
import pytest

from harness import Backend, Mesh, eventually
from mizzen.agent.envoy import Agent
from mizzen.registry.model import ISTIO_TLS_MODE, TLS_MODE_LABEL
from mizzen.security.identity import Identity

pytestmark = pytest.mark.e2e

NS = "foo"
SERVICE = f"""
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: {NS}}}
spec:
  selector: {{app: server}}
  ports: [{{name: http, port: 9080, targetPort: 9080}}]
"""
CLIENTS = {"client": Identity("foo", "client"), "other": Identity("foo", "other"),
           "bar": Identity("bar", "client")}
FOO_CLIENT, FOO_OTHER, BAR_CLIENT = (CLIENTS[n].uri.removeprefix("spiffe://") for n in CLIENTS)

ALLOW_ROWS: Rows = {   # path -> (the ALLOW rule's source or when, {caller: expected status})
    "/principal": (f"from: [{{source: {{principals: [{FOO_CLIENT}]}}}}]",
                   {"client": 200, "other": 403, "bar": 403, "none": 403}),
    "/principal-prefix": ('from: [{source: {principals: ["cluster.local/ns/foo/*"]}}]',
                          {"client": 200, "other": 200, "bar": 403, "none": 403}),
    "/principal-suffix": ('from: [{source: {principals: ["*/sa/client"]}}]',
                          {"client": 200, "bar": 200, "other": 403}),
    "/not-principal": (f"from: [{{source: {{notPrincipals: [{FOO_OTHER}]}}}}]",
                       {"client": 200, "bar": 200, "other": 403, "none": 200}),
    "/namespace": ("from: [{source: {namespaces: [foo]}}]",
                   {"client": 200, "other": 200, "bar": 403, "none": 403}),
    "/not-namespace": ("from: [{source: {notNamespaces: [bar]}}]",
                       {"client": 200, "other": 200, "bar": 403, "none": 200}),
    "/when-principal": (f"when: [{{key: source.principal, values: [{BAR_CLIENT}]}}]",
                        {"bar": 200, "client": 403, "none": 403}),
    "/when-not-principal": (f"when: [{{key: source.principal, notValues: [{FOO_CLIENT}]}}]",
                            {"client": 403, "other": 200, "bar": 200}),
    "/when-namespace": ("when: [{key: source.namespace, values: [bar]}]",
                        {"bar": 200, "client": 403, "none": 403}),
    "/when-not-namespace": ("when: [{key: source.namespace, notValues: [bar]}]",
                            {"client": 200, "other": 200, "bar": 403}),
}
DENY_ROWS: Rows = {    # path -> (the DENY rule's source or when, {caller: status}); ALLOWed otherwise
    "/deny-principal": (f"from: [{{source: {{principals: [{FOO_OTHER}]}}}}]",
                        {"client": 200, "other": 403, "bar": 200, "none": 200}),
    "/deny-not-principal": (f"from: [{{source: {{notPrincipals: [{FOO_CLIENT}]}}}}]",
                            {"client": 200, "other": 403, "bar": 403, "none": 403}),
    "/deny-namespace": ("from: [{source: {namespaces: [bar]}}]",
                        {"client": 200, "other": 200, "bar": 403, "none": 200}),
    "/deny-not-namespace": ("from: [{source: {notNamespaces: [foo]}}]",
                            {"client": 200, "other": 200, "bar": 403, "none": 403}),
    "/deny-when-principal": (f"when: [{{key: source.principal, values: [{FOO_OTHER}]}}]",
                             {"client": 200, "other": 403, "none": 200}),
    "/deny-when-namespace": ("when: [{key: source.namespace, values: [bar]}]",
                             {"client": 200, "bar": 403, "none": 200}),
    "/deny-when-not-namespace": ("when: [{key: source.namespace, notValues: [foo]}]",
                                 {"client": 200, "bar": 403, "none": 403}),
}
SNI = "outbound_.9080_._.server.foo.svc.cluster.local"     # what auto mTLS sends (Istio's SNI)
Rows = dict[str, tuple[str, dict[str, int]]]


def connection_rows(server_ip: str) -> tuple[Rows, Rows]:
    """ALLOW and DENY rows on the connection: connection.sni (only mTLS callers send one),
    destination.ip (the server's pod address) and destination.port."""
    net24 = server_ip.rsplit(".", 1)[0] + ".0/24"
    return ({
        "/sni": (f"when: [{{key: connection.sni, values: [{SNI}]}}]",
                 {"client": 200, "bar": 200, "none": 403}),
        "/sni-suffix": ('when: [{key: connection.sni, values: ["*.server.foo.svc.cluster.local"]}]',
                        {"client": 200, "none": 403}),
        "/sni-other": (f"when: [{{key: connection.sni, values: [{SNI.replace('server', 'other')}]}}]",
                       {"client": 403}),
        "/dest-ip": (f'when: [{{key: destination.ip, values: ["{server_ip}"]}}]',
                     {"client": 200, "none": 200}),
        "/dest-ip-cidr-in": (f'when: [{{key: destination.ip, values: ["{net24}"]}}]',
                             {"client": 200}),
        "/dest-ip-cidr": ('when: [{key: destination.ip, values: ["10.0.0.0/8"]}]',
                          {"client": 403, "none": 403}),
        "/dest-ip-not": (f'when: [{{key: destination.ip, notValues: ["{server_ip}"]}}]', {"client": 403}),
        "/dest-port": ('when: [{key: destination.port, values: ["9080"]}]', {"client": 200, "none": 200}),
        "/dest-port-other": ('when: [{key: destination.port, values: ["9999"]}]', {"client": 403}),
    }, {
        "/deny-no-sni": ('when: [{key: connection.sni, notValues: ["*"]}]',
                         {"client": 200, "bar": 200, "none": 403}),
    })


def policies(allow: Rows, deny: Rows) -> str:
    def head(name: str, action: str) -> str:
        return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                f"metadata: {{name: {name}, namespace: {NS}}}\nspec:\n"
                f"  selector: {{matchLabels: {{app: server}}}}\n  action: {action}\n  rules:\n")

    def rules(rows: Rows) -> str:
        return "".join(f"  - to: [{{operation: {{paths: [{path}]}}}}]\n    {cond}\n"
                       for path, (cond, _) in rows.items())
    return (head("rows", "ALLOW") + rules(allow) + '  - to: [{operation: {paths: ["/deny-*", /open]}}]\n'
            + "---\n" + head("deny", "DENY") + rules(deny))


async def request(mesh: Mesh, caller: Agent | None, server: Backend, path: str) -> httpx.Response:
    """A GET of ``path`` on the server from a client sidecar (over auto mTLS) or, for None, plaintext
    straight to the server's sidecar."""
    # verify=False: plain HTTP to the sidecars, and no CA bundle loaded for each of the ~80 clients
    if caller is None:
        async with httpx.AsyncClient(trust_env=False, timeout=10, verify=False) as c:
            return await c.get(f"http://{server.address}:9080{path}")
    async with mesh.client_via(caller, verify=False) as c:
        return await c.get(f"http://server.foo:9080{path}")


async def test_peer_identity_rows_through_sidecars_with_auto_mtls() -> None:
    async with Mesh(identities=True) as mesh:
        await mesh.apply_yaml(SERVICE)
        server = await mesh.backend("server", namespace=NS, sidecar=True, service_account="server",
                                    labels={"app": "server", TLS_MODE_LABEL: ISTIO_TLS_MODE})
        callers: dict[str, Agent | None] = {"none": None}
        for name, who in CLIENTS.items():
            callers[name] = await mesh.sidecar(who.namespace, f"{name}-1", {"app": name},
                                               service_account=who.service_account)
        conn_allow, conn_deny = connection_rows(server.address)
        allow, deny = {**ALLOW_ROWS, **conn_allow}, {**DENY_ROWS, **conn_deny}
        await mesh.apply_yaml(policies(allow, deny))
        await mesh.wait_synced(timeout=20)

        for name, who in CLIENTS.items():      # every sidecar caller reaches the app over mTLS as itself
            async def mtls(caller: Agent | None = callers[name], uri: str = who.uri) -> None:
                r = await request(mesh, caller, server, "/open")
                assert r.status_code == 200, r.text
                xfcc = {k.lower(): v for k, v in json.loads(r.text)["headers"].items()}.get(
                    "x-forwarded-client-cert", "")
                assert f"URI={uri}" in xfcc and f"By={Identity(NS, 'server').uri}" in xfcc, xfcc
            await eventually(mtls, timeout=20, interval=0.2)
        none = await request(mesh, None, server, "/open")
        assert none.status_code == 200 and "x-forwarded-client-cert" not in none.text.lower(), none.text

        failures: list[str] = []
        for path, (_, expected) in {**allow, **deny}.items():
            for name, status in expected.items():
                r = await request(mesh, callers[name], server, path)
                body_ok = status != 403 or r.text == "RBAC: access denied"
                if r.status_code != status or not body_ok:
                    failures.append(f"{path} as {name}: {r.status_code} {r.text[:80]!r}, want {status}")
        assert not failures, "\n".join(failures)
