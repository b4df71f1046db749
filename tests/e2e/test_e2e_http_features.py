"""VirtualService HTTP features end to end through the real control plane and real Envoys: matches (uri regex,
queryParams, method, withoutHeaders, ignoreUriCase, sourceLabels), header manipulation, rewrites (authority,
uriRegexRewrite), redirect, directResponse, mirror with mirrorPercentage, corsPolicy, delegate, and several
VirtualServices for one host (merged on a gateway, oldest wins on sidecars).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from harness import Backend, Mesh, eventually
from mizzen.agent.envoy import Agent

pytestmark = pytest.mark.e2e

NS = "feat"
WEB = "http://web:9080"
SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 9080, name: http}], selector: {app: web}}
---
apiVersion: v1
kind: Service
metadata: {name: shadow}
spec: {ports: [{port: 9080, name: http}], selector: {app: shadow}}
"""


def tag(rule: str) -> str:
    """A route to ``web`` that tells the backend which rule matched (request header ``x-rule``)."""
    return f"route: [{{destination: {{host: web}}}}]\n    headers: {{request: {{set: {{x-rule: {rule}}}}}}}"


MATCHES = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web]
  http:
  - match: [{{uri: {{prefix: /src}}, sourceLabels: {{team: b}}}}]
    {tag("team-b")}
  - match: [{{uri: {{regex: "/re/[0-9]+"}}}}]
    {tag("regex")}
  - match: [{{queryParams: {{v: {{exact: "2"}}}}}}]
    {tag("query")}
  - match: [{{method: {{exact: POST}}}}]
    {tag("post")}
  - match: [{{uri: {{prefix: /free}}, withoutHeaders: {{x-block: {{}}}}}}]
    {tag("without")}
  - match: [{{uri: {{exact: /CaSe}}, ignoreUriCase: true}}]
    {tag("case")}
  - {tag("default")}
"""


async def setup(mesh: Mesh, labels: dict[str, str] | None = None) -> tuple[Agent, Backend]:
    await mesh.apply_yaml(SERVICES, namespace=NS, file="services.yaml")
    web = await mesh.backend("web", namespace=NS, port=9080)
    client = await mesh.sidecar(NS, "client-a-pod", labels or {"app": "client", "team": "a"})
    return client, web


def headers_seen(body: dict[str, object]) -> dict[str, str]:
    """The request headers the backend saw, names lower-cased."""
    return {str(k).lower(): str(v) for k, v in body["headers"].items()}  # type: ignore[attr-defined]


async def rule(mesh: Mesh, client: Agent, method: str, path: str,
               headers: dict[str, str] | None = None) -> str:
    async with mesh.client_via(client) as c:
        r = await c.request(method, WEB + path, headers=headers)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return headers_seen(r.json()).get("x-rule", "-")


async def test_matches_regex_query_method_without_headers_case_and_source_labels(mesh: Mesh) -> None:
    client, _ = await setup(mesh)
    other = await mesh.sidecar(NS, "client-b-pod", {"app": "client", "team": "b"})
    await mesh.apply_yaml(MATCHES, namespace=NS)
    await mesh.wait_synced()
    await eventually(lambda: _is(rule(mesh, client, "GET", "/re/42"), "regex"))
    cases = [
        ("GET", "/re/42", {}, "regex"), ("GET", "/re/42x", {}, "default"), ("GET", "/re/x", {}, "default"),
        ("GET", "/p?v=2", {}, "query"), ("GET", "/p?v=22", {}, "default"), ("GET", "/p?w=2", {}, "default"),
        ("POST", "/p", {}, "post"), ("PUT", "/p", {}, "default"),
        ("GET", "/free", {}, "without"), ("GET", "/free", {"x-block": "1"}, "default"),
        ("GET", "/case", {}, "case"), ("GET", "/CASE", {}, "case"), ("GET", "/cases", {}, "default"),
        ("GET", "/src", {}, "default"),
    ]
    got = [await rule(mesh, client, m, p, headers=h) for m, p, h, _ in cases]
    assert got == [want for *_, want in cases], list(zip(cases, got, strict=True))
    # the same request from a workload labelled team=b takes the sourceLabels rule
    assert await rule(mesh, other, "GET", "/src") == "team-b"


async def _is(value: object, want: str) -> None:
    assert await value == want  # type: ignore[misc]


HEADERS_AND_REWRITES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - match: [{uri: {prefix: /auth}}]
    rewrite: {authority: rewritten.example.com}
    route: [{destination: {host: web}}]
  - match: [{uri: {prefix: /old/}}]
    rewrite: {uriRegexRewrite: {match: "^/old/([a-z]+)/(.*)$", rewrite: "/new/\\\\2/\\\\1"}}
    route: [{destination: {host: web}}]
  - match: [{uri: {prefix: /moved}}]
    redirect: {uri: /there, port: 8443, scheme: https, redirectCode: 302}
  - match: [{uri: {prefix: /gone}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - match: [{uri: {prefix: /split}}]
    route:
    - destination: {host: web}
      weight: 50
      headers: {response: {set: {x-dest: web}}, request: {set: {x-to: web}}}
    - destination: {host: shadow}
      weight: 50
      headers: {response: {set: {x-dest: shadow}}, request: {set: {x-to: shadow}}}
  - headers:
      request: {set: {x-set: s1}, add: {x-add: a1}, remove: [x-drop]}
      response: {set: {x-resp: r1}, add: {x-resp-add: r2}, remove: [content-type]}
    route: [{destination: {host: web}}]
"""


async def test_headers_rewrites_redirect_and_direct_response(mesh: Mesh) -> None:
    client, web = await setup(mesh)
    await mesh.backend("shadow", namespace=NS, port=9080)
    await mesh.apply_yaml(HEADERS_AND_REWRITES, namespace=NS)
    await mesh.wait_synced()
    async with mesh.client_via(client) as c:
        async def rewritten() -> None:
            r = await c.get(WEB + "/auth/x")
            assert r.status_code == 200 and headers_seen(r.json())["host"] == "rewritten.example.com", r.text
        await eventually(rewritten)

        r = await c.get(WEB + "/old/abc/rest/of?q=1")
        assert r.json()["path"] == "/new/rest/of/abc?q=1", r.json()["path"]

        r = await c.get(WEB + "/moved/here?q=1", follow_redirects=False)
        assert r.status_code == 302, r.status_code
        assert r.headers["location"] == "https://web:8443/there?q=1", r.headers["location"]

        n = web.requests
        r = await c.get(WEB + "/gone")
        assert (r.status_code, r.text) == (418, "short and stout")
        assert web.requests == n                   # answered by Envoy, the backend never saw it

        # per-destination headers of a weighted route go with the destination that was picked
        split: Counter[str] = Counter()
        for _ in range(20):
            r = await c.get(WEB + "/split")
            service = r.json()["service"]
            assert r.headers["x-dest"] == service == headers_seen(r.json())["x-to"], (r.headers, r.text)
            split[service] += 1
        assert set(split) == {"web", "shadow"}, split

        r = await c.get(WEB + "/h", headers={"x-drop": "1", "x-set": "client"})
    seen = headers_seen(r.json())
    assert r.status_code == 200 and "x-drop" not in seen
    assert seen["x-set"] == "s1"                              # set replaces the client's value
    assert seen["x-add"] == "a1", seen
    assert r.headers["x-resp"] == "r1" and r.headers["x-resp-add"] == "r2" and "content-type" not in r.headers


MIRROR = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - match: [{uri: {prefix: /all}}]
    route: [{destination: {host: web}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 100.0}
  - match: [{uri: {prefix: /half}}]
    route: [{destination: {host: web}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 50.0}
  - match: [{uri: {prefix: /many}}]
    route: [{destination: {host: web}}]
    mirrors: [{destination: {host: shadow}}]
  - route: [{destination: {host: web}}]
"""


async def test_mirror_and_mirror_percentage(mesh: Mesh) -> None:
    client, web = await setup(mesh)
    shadow = await mesh.backend("shadow", namespace=NS, port=9080)
    shadow.fail(500)                          # a mirror's answer never reaches the client
    await mesh.apply_yaml(MIRROR, namespace=NS)
    await mesh.wait_synced()
    async with mesh.client_via(client) as c:
        async def mirrored() -> None:
            assert (await c.get(WEB + "/all/0")).status_code == 200
            assert shadow.requests >= 1
        await eventually(mirrored)
        shadow.reset_counts()
        web.reset_counts()
        for i in range(10):
            assert (await c.get(WEB + f"/all/{i}")).status_code == 200
        for i in range(100):
            assert (await c.get(WEB + f"/half/{i}")).status_code == 200
        for i in range(10):
            assert (await c.get(WEB + f"/none/{i}")).status_code == 200
        for i in range(10):
            assert (await c.get(WEB + f"/many/{i}")).status_code == 200

    async def all_arrived() -> None:
        kinds = Counter(p.split("/")[1] for p in shadow.paths)
        assert kinds["all"] == 10 and kinds["many"] == 10, shadow.paths
    await eventually(all_arrived)
    await asyncio.sleep(0.2)
    kinds = Counter(p.split("/")[1] for p in shadow.paths)
    assert kinds["none"] == 0 and 25 <= kinds["half"] <= 75, kinds
    assert web.requests == 130
    assert shadow.hosts and all(h == "web-shadow:9080" for h in shadow.hosts), set(shadow.hosts)


CORS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - route: [{destination: {host: web}}]
    corsPolicy:
      allowOrigins: [{exact: "https://good.example.com"}, {regex: "https://.*\\\\.friends\\\\.org"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-custom]
      exposeHeaders: [x-exposed]
      maxAge: 24h
      allowCredentials: true
"""


async def test_cors_policy(mesh: Mesh) -> None:
    client, web = await setup(mesh)
    await mesh.apply_yaml(CORS, namespace=NS)
    await mesh.wait_synced()
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-custom"}
    async with mesh.client_via(client) as c:
        async def allowed() -> None:
            r = await c.options(WEB + "/api", headers={"Origin": "https://good.example.com", **preflight})
            assert r.status_code == 200, r.status_code
            assert r.headers.get("access-control-allow-origin") == "https://good.example.com", r.headers
        await eventually(allowed)
        n = web.requests
        r = await c.options(WEB + "/api", headers={"Origin": "https://a.friends.org", **preflight})
        assert r.headers["access-control-allow-origin"] == "https://a.friends.org"
        assert r.headers["access-control-allow-methods"] == "GET,POST"
        assert r.headers["access-control-allow-headers"] == "x-custom"
        assert r.headers["access-control-max-age"] == "86400"
        assert r.headers["access-control-allow-credentials"] == "true"
        assert web.requests == n                       # Envoy answers allowed preflights itself
        # a simple request from an allowed origin gets the expose header; a disallowed origin gets nothing
        r = await c.get(WEB + "/api", headers={"Origin": "https://good.example.com"})
        assert r.headers["access-control-expose-headers"] == "x-exposed"
        for origin in ("https://evil.example.com", "https://friends.org"):
            r = await c.options(WEB + "/api", headers={"Origin": origin, **preflight})
            assert not any(h.startswith("access-control-") for h in r.headers), (origin, r.headers)
            r = await c.get(WEB + "/api", headers={"Origin": origin})
            assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*/shop.example.com", "*/mall.example.com"]
"""
DELEGATION = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: istio-system}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /team}}]
    delegate: {name: team-routes, namespace: team}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: team-routes, namespace: team}
spec:
  http:
  - match: [{uri: {prefix: /team/web}}]
    route: [{destination: {host: web.feat.svc.cluster.local}}]
  - match: [{uri: {prefix: /team/shadow}}]
    route: [{destination: {host: shadow.feat.svc.cluster.local}}]
"""
SPLIT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{host}]
  gateways: [{gateways}]
  http:
  - match: [{{uri: {{prefix: {prefix}}}}}]
    route: [{{destination: {{host: {dest}.feat.svc.cluster.local}}}}]
"""


async def test_delegate_and_merged_virtual_services_on_a_gateway(mesh: Mesh) -> None:
    await mesh.apply_yaml(SERVICES, namespace=NS)
    web = await mesh.backend("web", namespace=NS, port=9080)
    shadow = await mesh.backend("shadow", namespace=NS, port=9080)
    gw = await mesh.gateway()
    await mesh.apply_yaml(GATEWAY)
    await mesh.apply_yaml(DELEGATION)
    # two more VirtualServices for another host on the same gateway: their routes are merged, the older
    # one's catch-all (prefix /) going last so that it does not shadow the younger one's /b
    for name, prefix, dest in (("part-a", "/", "web"), ("part-b", "/b", "shadow")):
        await mesh.apply_yaml(SPLIT.format(name=name, ns=NS, host="mall.example.com", prefix=prefix,
                                           dest=dest, gateways="istio-system/gw"))
        await asyncio.sleep(0.05)
    await mesh.wait_synced()
    shop, mall = {"Host": "shop.example.com"}, {"Host": "mall.example.com"}
    async with mesh.gateway_client(gw) as c:
        async def delegated() -> None:
            r = await c.get("/team/web/1", headers=shop)
            assert r.status_code == 200 and r.json()["pod"] == web.pod, r.status_code
        await eventually(delegated)
        r = await c.get("/team/shadow/1", headers=shop)
        assert r.status_code == 200 and r.json()["pod"] == shadow.pod
        assert (await c.get("/team/other", headers=shop)).status_code == 404   # no delegate rule matches
        assert (await c.get("/web", headers=shop)).status_code == 404          # outside the root's match
        r = await c.get("/a/1", headers=mall)
        assert r.status_code == 200 and r.json()["pod"] == web.pod
        r = await c.get("/b/1", headers=mall)
        assert r.status_code == 200 and r.json()["pod"] == shadow.pod
        r = await c.get("/c", headers=mall)
        assert r.status_code == 200 and r.json()["pod"] == web.pod


async def test_two_virtual_services_for_one_host_on_sidecars_oldest_wins(mesh: Mesh) -> None:
    client, web = await setup(mesh)
    shadow = await mesh.backend("shadow", namespace=NS, port=9080)
    # "zz-old" is created first: its rules apply; the younger "aa-new" (sorting first by name) is ignored
    await mesh.apply_yaml(SPLIT.format(name="zz-old", ns=NS, host="web", prefix="/", dest="web",
                                       gateways="mesh"))
    await asyncio.sleep(0.05)
    await mesh.apply_yaml(SPLIT.format(name="aa-new", ns=NS, host="web", prefix="/", dest="shadow",
                                       gateways="mesh"))
    await mesh.wait_synced()
    async with mesh.client_via(client) as c:
        pods = {(await c.get(WEB + f"/{i}")).json()["pod"] for i in range(5)}
    assert pods == {web.pod}, pods
    assert shadow.requests == 0
    # deleting the older one hands the host to the other
    await mesh.delete_yaml(SPLIT.format(name="zz-old", ns=NS, host="web", prefix="/", dest="web",
                                        gateways="mesh"))
    await mesh.wait_synced()

    async def handed_over() -> None:
        async with mesh.client_via(client) as c:
            assert (await c.get(WEB + "/x")).json()["pod"] == shadow.pod
    await eventually(handed_over)


BOTH_SIDES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web, web.example.com]
  gateways: [istio-system/gw2, mesh]
  http:
  - match: [{gateways: [istio-system/gw2], uri: {prefix: /}}]
    route: [{destination: {host: web}}]
    headers: {request: {set: {x-rule: edge}}}
  - match: [{gateways: [mesh], uri: {prefix: /}}]
    route: [{destination: {host: web}}]
    headers: {request: {set: {x-rule: mesh}}}
"""


async def test_match_gateways_split_rules_between_the_gateway_and_sidecars(mesh: Mesh) -> None:
    client, _ = await setup(mesh)
    gw = await mesh.gateway()
    await mesh.apply_yaml(GATEWAY.replace("name: gw", "name: gw2").replace(
        '"*/shop.example.com", "*/mall.example.com"', '"*/web.example.com"'))
    await mesh.apply_yaml(BOTH_SIDES, namespace=NS)
    await mesh.wait_synced()
    async with mesh.gateway_client(gw) as c:
        async def edge() -> None:
            r = await c.get("/x", headers={"Host": "web.example.com"})
            assert r.status_code == 200 and headers_seen(r.json())["x-rule"] == "edge", r.status_code
        await eventually(edge)
    assert await rule(mesh, client, "GET", "/x") == "mesh"
