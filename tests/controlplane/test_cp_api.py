"""The control plane's HTTP API over real sockets: apply/delete/get, 422 validation errors with file:line,
400 for bad requests, workloads, and the debug endpoints."""

from __future__ import annotations

from typing import Any

import mizzen
from harness import Mesh, mesh  # noqa: F401  (mesh is a fixture)

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
  labels: {app: reviews}
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: reviews
"""

DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
"""

BAD_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 150
"""


def docs(*texts: tuple[str, str], namespace: str | None = "bookinfo") -> dict[str, Any]:
    return {"documents": [{"file": f, "text": t} for f, t in texts], "namespace": namespace}


async def test_version_and_ready(mesh: Mesh) -> None:  # noqa: F811
    async with mesh.api_client() as api:
        assert (await api.get("/version")).json() == {"version": mizzen.__version__}
        r = await api.get("/ready")
        assert r.status_code == 200 and r.json() == {"ready": True, "workloads_synced": True}


async def test_apply_get_delete(mesh: Mesh) -> None:  # noqa: F811
    async with mesh.api_client() as api:
        body = docs(("svc.yaml", SERVICE), ("dr.yaml", DR))
        dry = await api.post("/apis/apply", json={**body, "dry_run": True})
        assert dry.status_code == 200
        assert [r["action"] for r in dry.json()["results"]] == ["created", "created"]
        assert (await api.get("/apis/objects")).json() == {"items": []}

        r = await api.post("/apis/apply", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [
            {"kind": "Service", "namespace": "bookinfo", "name": "reviews", "action": "created"},
            {"kind": "DestinationRule", "namespace": "bookinfo", "name": "reviews", "action": "created"},
        ]
        again = await api.post("/apis/apply", json=body)
        assert [x["action"] for x in again.json()["results"]] == ["unchanged", "unchanged"]

        got = await api.get("/apis/objects", params={"kind": "dr", "namespace": "bookinfo"})
        items = got.json()["items"]
        assert len(items) == 1
        (dr,) = items
        assert dr["kind"] == "DestinationRule" and dr["spec"]["host"] == "reviews"
        assert dr["metadata"]["name"] == "reviews" and dr["metadata"]["creationTimestamp"].endswith("Z")
        by_name = (await api.get("/apis/objects", params={"kind": "services", "name": "reviews"})).json()
        assert [i["kind"] for i in by_name["items"]] == ["Service"]
        assert (await api.get("/apis/objects", params={"namespace": "other"})).json() == {"items": []}

        d = await api.post("/apis/delete", json=docs(("dr.yaml", DR), ("dr2.yaml", DR.replace(
            "name: reviews", "name: ghost"))))
        assert [x["action"] for x in d.json()["results"]] == ["deleted", "not found"]
        remaining = (await api.get("/apis/objects")).json()["items"]
        assert [i["kind"] for i in remaining] == ["Service"]


async def test_validation_errors_are_422_and_nothing_is_applied(mesh: Mesh) -> None:  # noqa: F811
    async with mesh.api_client() as api:
        r = await api.post("/apis/apply", json=docs(("svc.yaml", SERVICE), ("reviews-vs.yaml", BAD_VS)))
        assert r.status_code == 422, r.text
        errors = r.json()["errors"]
        assert errors and all(e["severity"] == "error" for e in errors)
        weight = [e for e in errors if e["path"].endswith("weight")]
        assert weight, errors
        expected = "reviews-vs.yaml:13: VirtualService/reviews: spec.http[0].route[0].weight"
        assert weight[0]["text"].startswith(expected)
        # all-or-nothing: the valid Service in the same request was not applied either
        assert (await api.get("/apis/objects")).json() == {"items": []}

        syntax = await api.post("/apis/apply", json=docs(("broken.yaml", "kind: [unclosed\n")))
        assert syntax.status_code == 422
        assert syntax.json()["errors"][0]["text"].startswith("broken.yaml:")


async def test_bad_requests_are_400_one_line(mesh: Mesh) -> None:  # noqa: F811
    async with mesh.api_client() as api:
        cases: list[tuple[str, str, Any]] = [
            ("POST", "/apis/apply", b"{not json"),
            ("POST", "/apis/apply", b"[1, 2]"),
            ("POST", "/apis/apply", b'{"documents": []}'),
            ("POST", "/apis/apply", b'{"documents": [{"file": "a.yaml"}]}'),
            ("POST", "/apis/apply", b'{"documents": [{"text": "x: 1"}], "dry_run": "yes"}'),
            ("POST", "/apis/delete", b'{"documents": "nope"}'),
            ("GET", "/apis/objects?kind=frobnicators", None),
            ("POST", "/apis/workloads", b'{"name": "w"}'),
            ("POST", "/apis/workloads", b'{"name": "w", "namespace": "n", "address": "1.2.3.4", "port": 1}'),
            ("GET", "/debug/config_dump", None),
        ]
        for method, path, content in cases:
            r = await api.request(method, path, content=content, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (path, content, r.text)
            body = r.json()
            assert list(body) == ["error"] and "\n" not in body["error"] and "Traceback" not in r.text
        missing = await api.get("/nope")
        assert missing.status_code == 404 and "error" in missing.json()


async def test_workloads_and_registry(mesh: Mesh) -> None:  # noqa: F811
    async with mesh.api_client() as api:
        await api.post("/apis/apply", json=docs(("svc.yaml", SERVICE)))
        w = {"name": "reviews-v1-a", "namespace": "bookinfo", "address": "127.10.9.9",
             "labels": {"app": "reviews", "version": "v1"}}
        r = await api.post("/apis/workloads", json=w)
        assert r.status_code == 200 and r.json()["action"] == "registered"
        listed = (await api.get("/apis/workloads")).json()["items"]
        assert [(x["name"], x["address"]) for x in listed] == [("reviews-v1-a", "127.10.9.9")]

        reg = (await api.get("/debug/registryz")).json()
        assert [s["hostname"] for s in reg["services"]] == ["reviews.bookinfo.svc.cluster.local"]
        (eps,) = [e for e in reg["endpoints"] if e["port"] == 9080]
        assert [(e["address"], e["port"]) for e in eps["endpoints"]] == [("127.10.9.9", 9080)]

        assert (await api.delete("/apis/workloads/bookinfo/reviews-v1-a")).status_code == 200
        assert (await api.delete("/apis/workloads/bookinfo/reviews-v1-a")).status_code == 404
        assert (await api.get("/apis/workloads")).json() == {"items": []}


async def test_debug_endpoints(mesh: Mesh) -> None:  # noqa: F811
    sidecar = await mesh.sidecar("bookinfo", "productpage-v1", {"app": "productpage", "version": "v1"})
    async with mesh.api_client() as api:
        await api.post("/apis/apply", json=docs(("svc.yaml", SERVICE), ("dr.yaml", DR)))
        await mesh.wait_synced()
        configz = (await api.get("/debug/configz")).json()
        assert sorted(i["kind"] for i in configz["items"]) == ["DestinationRule", "Service"]
        assert configz["load_problems"] == []

        ps = (await api.get("/debug/push_status")).json()
        assert ps["pushes"] >= 1 and ps["proxies"] == [sidecar.node_id] and ps["errors"] == []
        assert ps["proxies_pushed"] == 1 and ps["nacks"] == [] and ps["last_push"].endswith("Z")
        assert any("DestinationRule/bookinfo/reviews" in reason for reason in ps["reasons"])

        syncz = (await api.get("/debug/syncz")).json()
        assert [(e["proxy"], e["types"]["CDS"]["status"]) for e in syncz] == [(sidecar.node_id, "SYNCED")]

        for ident in (sidecar.node_id, "sidecar~" + sidecar.spec.ip, "productpage-v1.bookinfo"):
            dump = (await api.get("/debug/config_dump", params={"proxyID": ident})).json()
            assert dump["proxy"] == sidecar.node_id
            clusters = {c["name"] for c in dump["CDS"]}
            assert "outbound|9080|v1|reviews.bookinfo.svc.cluster.local" in clusters
            assert all(c["@type"].endswith("envoy.config.cluster.v3.Cluster") for c in dump["CDS"])
            assert {lis["name"] for lis in dump["LDS"]} >= {f"{sidecar.spec.ip}_15080"}
        nope = await api.get("/debug/config_dump", params={"proxyID": "router~"})
        assert nope.status_code == 404


async def test_api_client_errors_are_json_even_for_wrong_method(mesh: Mesh) -> None:  # noqa: F811
    async with mesh.api_client() as api:
        r = await api.get("/apis/apply")
        assert r.status_code == 405 and "error" in r.json()


HTTPS_GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["a.example.com"]
    tls: {mode: SIMPLE, credentialName: no-such-cert}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"""


async def test_proxy_warnings_name_the_config_generation_skipped(mesh: Mesh) -> None:  # noqa: F811
    """A valid Gateway whose HTTPS server the gateway cannot serve (its credential does not exist): Envoy
    never sees that server, so nothing NACKs; /debug/proxy_warnings says what was skipped, for that proxy."""
    gw = await mesh.gateway()
    side = await mesh.sidecar("bookinfo", "productpage-v1", {"app": "productpage", "version": "v1"})
    async with mesh.api_client() as api:
        r = await api.post("/apis/apply", json=docs(("gw.yaml", HTTPS_GATEWAY), namespace=None))
        assert r.status_code == 200, r.text
        await mesh.wait_synced()
        one = (await api.get("/debug/proxy_warnings", params={"proxyID": gw.node_id})).json()
        assert one["proxy"] == gw.node_id
        assert any("no-such-cert" in w for w in one["warnings"]), one
        none = (await api.get("/debug/proxy_warnings", params={"proxyID": side.node_id})).json()
        assert none["warnings"] == []
        every = (await api.get("/debug/proxy_warnings")).json()["proxies"]
        assert [e["proxy"] for e in every] == [gw.node_id]
        assert (await api.get("/debug/proxy_warnings", params={"proxyID": "router~nope"})).status_code == 404
