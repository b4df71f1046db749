"""The control-plane metrics Istio's control-plane dashboard reads beyond the push path's: config and registry
events, validation passed/failed, internal generation errors, istio_build and the config size histogram,
with istiod's names (counters without ``_total``)."""

from __future__ import annotations

from collections.abc import Collection

from harness import Mesh, scrape
from mizzen.core.generate import generate
from mizzen.core.proxy import Proxy
from mizzen.core.push_context import PushContext
from mizzen.xds.resources import ResourceSet

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
"""
BAD_VS = VS.replace("{host: reviews}", "{host: reviews}\n      weight: -1")
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: reviews}
"""


def crashing(proxy: Proxy, push: PushContext, types: Collection[str] | None = None) -> ResourceSet:
    if proxy.labels.get("app") == "fragile" and push.configs.get("VirtualService", "bookinfo", "reviews"):
        raise RuntimeError("boom")
    return generate(proxy, push, types)


def value(metrics: dict[str, float], key: str) -> float:
    return metrics.get(key, 0.0)


async def test_dashboard_metrics_follow_applies_registrations_and_errors() -> None:
    async with Mesh(generator=crashing) as mesh, mesh.api_client() as api:
        await mesh.sidecar("bookinfo", "fragile-1", {"app": "fragile"})
        await mesh.wait_synced()
        before = scrape((await api.get("/metrics")).text)
        assert before['istio_build{component="pilot",tag="' + __import__("mizzen").__version__ + '"}'] == 1

        both = SERVICE + "---\n" + VS
        ok = await api.post("/apis/apply", json={"documents": [{"file": "a.yaml", "text": both}],
                                                 "namespace": "bookinfo"})
        assert ok.status_code == 200, ok.text
        bad = await api.post("/apis/apply", json={"documents": [{"file": "b.yaml", "text": BAD_VS}],
                                                  "namespace": "bookinfo"})
        assert bad.status_code == 422
        for kind in ("Bogus1", "Weird2"):   # kinds nobody serves: one series for all, not one per string
            odd = await api.post("/apis/apply", json={"documents": [
                {"file": "c.yaml", "text": VS.replace("VirtualService", kind)}], "namespace": "bookinfo"})
            assert odd.status_code == 422, odd.text
        backend = await mesh.backend("reviews", namespace="bookinfo")
        await mesh.wait_synced()
        mid = scrape((await api.get("/metrics")).text)
        await api.post("/apis/delete", json={"documents": [{"file": "a.yaml", "text": VS}],
                                             "namespace": "bookinfo"})
        mesh.cp.remove_workload("bookinfo", backend.pod)
        await mesh.wait_synced()
        after = scrape((await api.get("/metrics")).text)

    passed = 'galley_validation_passed{group="networking.istio.io",resource="virtualservices",version="v1"}'
    assert value(mid, passed) - value(before, passed) == 1
    failed = ('galley_validation_failed{group="networking.istio.io",reason="invalid_resource",'
              'resource="virtualservices",version="v1"}')
    assert value(mid, failed) - value(before, failed) == 1
    unknown = 'galley_validation_failed{group="",reason="invalid_resource",resource="unknown",version=""}'
    assert value(mid, unknown) - value(before, unknown) == 2
    assert not any("bogus1" in k.lower() or "weird2" in k.lower() for k in mid)
    assert value(mid, 'pilot_k8s_cfg_events{event="add",type="VirtualService"}') == 1
    assert value(mid, 'pilot_k8s_reg_events{event="add",type="Services"}') == 1
    assert value(after, 'pilot_k8s_cfg_events{event="delete",type="VirtualService"}') == 1
    assert value(mid, 'pilot_k8s_reg_events{event="add",type="Pods"}') >= 1
    assert value(after, 'pilot_k8s_reg_events{event="delete",type="Pods"}') >= 1
    # the VirtualService made generation for the fragile proxy fail: istiod counts that as an internal error
    errors = "pilot_total_xds_internal_errors"
    assert value(mid, errors) >= 1 > value(before, errors)
    assert value(after, 'pilot_xds_config_size_bytes_count{type="lds"}') >= 1
    assert not any(k.startswith(("pilot_k8s_cfg_events_total", "galley_validation_passed_total"))
                   for k in after)
