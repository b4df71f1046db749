"""Tracing into a real Jaeger with a real ``mizzen demo``: one ``/productpage`` request through the ingress
gateway is one trace in Jaeger with spans from the gateway, productpage, details, reviews and ratings proxies
(Bookinfo propagates the B3 headers), in the expected tree, with durations consistent with a 2 s delay fault
on ratings (injected by reviews' sidecar: the client span waits, the ratings server span does not)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from demo_helpers import ROOT, Demo, run_demo

from mizzen.observe.jaeger import find_binary

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    find_binary() is None, reason="no Jaeger build (tools/jaeger/build.sh: ./run test builds it with Go)")]

NET = ROOT / "tests" / "fixtures" / "istio" / "samples" / "bookinfo" / "networking"
DELAY_S = 2.0
RATINGS_DELAY = f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings}}
spec:
  hosts: [ratings]
  http:
  - fault:
      delay: {{fixedDelay: {DELAY_S:g}s, percentage: {{value: 100}}}}
    route:
    - destination: {{host: ratings, subset: v1}}
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    # Jaeger on an address of its own for this demo (a user's demo may hold the default one)
    with run_demo(tmp_path_factory.mktemp("demo-trace-state"), "--prometheus-port", "0",
                  "--jaeger-host", f"127.0.{16 + secrets.randbelow(200)}.{2 + secrets.randbelow(250)}") as d:
        yield d


def jaeger_url(demo: Demo) -> str:
    out = demo.mizzen("dashboard", "jaeger").stdout
    url = out.splitlines()[0].strip()
    assert url.startswith("http://127.") and "placeholder" in out, out
    return url


def fetch_trace(url: str, trace_id: str, want: int, timeout: float = 30) -> dict[str, Any]:
    """The trace once it has ``want`` spans (Envoy's Zipkin reporter flushes every 5 s)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=10) as c:
        while True:
            r = c.get(f"{url}/api/traces/{trace_id}")
            if r.status_code == 200:
                data = r.json()["data"]
                if data and len(data[0]["spans"]) >= want:
                    trace: dict[str, Any] = data[0]
                    return trace
            assert time.monotonic() < deadline, f"trace {trace_id}: {r.status_code} {r.text[:500]}"
            time.sleep(0.5)


def test_one_request_is_one_trace_through_every_proxy(demo: Demo) -> None:
    url = jaeger_url(demo)
    assert f"Jaeger            {url}" in demo.output()
    demo.mizzen("apply", "-n", "bookinfo", "-f", str(NET / "destination-rule-all.yaml"))
    demo.mizzen("apply", "-n", "bookinfo", "-f", str(NET / "virtual-service-reviews-v3.yaml"))
    demo.until(3, {"v3"}, timeout=15)          # reviews v3 calls ratings
    delay = demo.state / "ratings-delay.yaml"
    delay.write_text(RATINGS_DELAY)
    demo.mizzen("apply", "-n", "bookinfo", "-f", str(delay))
    # let the delay reach reviews' sidecar: a page now takes at least the delay
    deadline = time.monotonic() + 10
    with httpx.Client(trust_env=False, timeout=20) as c:
        while True:
            t0 = time.monotonic()
            c.get(f"{demo.url}/productpage")
            if time.monotonic() - t0 >= DELAY_S:
                break
            assert time.monotonic() < deadline, "the delay fault did not take effect"

        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        r = c.get(f"{demo.url}/productpage", headers={
            "x-b3-traceid": trace_id, "x-b3-spanid": parent, "x-b3-sampled": "1"})
        assert r.status_code == 200 and "reviews-v3" in r.text

    trace = fetch_trace(url, trace_id, want=8)
    procs = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    spans = []
    for s in trace["spans"]:
        tags = {t["key"]: t["value"] for t in s["tags"]}
        parents = [ref["spanID"] for ref in s["references"] if ref["refType"] == "CHILD_OF"]
        spans.append({"id": s["spanID"], "parent": parents[0] if parents else None,
                      "service": procs[s["processID"]], "kind": tags.get("span.kind"),
                      "duration_s": s["duration"] / 1e6, "url": str(tags.get("http.url", ""))})
    services = {"istio-ingressgateway.istio-system", "productpage.bookinfo", "details.bookinfo",
                "reviews.bookinfo", "ratings.bookinfo"}
    assert {s["service"] for s in spans} == services, spans
    assert len(spans) == 8, spans      # the gateway: one span; every sidecar hop: client + server
    by_id = {s["id"]: s for s in spans}

    def one(service: str, kind: str, host: str = "") -> dict[str, Any]:
        found = [s for s in spans if s["service"] == service and s["kind"] == kind and host in s["url"]]
        assert len(found) == 1, (service, kind, host, spans)
        return found[0]

    gateway = next(s for s in spans if s["service"] == "istio-ingressgateway.istio-system")
    assert gateway["parent"] == parent            # continues the caller's B3 context
    pp = one("productpage.bookinfo", "server")
    assert pp["parent"] == gateway["id"]
    for svc, caller in (("details", pp), ("reviews", pp)):
        out = one("productpage.bookinfo", "client", f"//{svc}:9080")
        assert out["parent"] == caller["id"]
        assert one(f"{svc}.bookinfo", "server")["parent"] == out["id"]
    reviews = one("reviews.bookinfo", "server")
    to_ratings = one("reviews.bookinfo", "client", "//ratings:9080")
    ratings = one("ratings.bookinfo", "server")
    assert to_ratings["parent"] == reviews["id"] and ratings["parent"] == to_ratings["id"]
    # the delay is injected by reviews' sidecar before it calls ratings (Envoy's timers may fire up to a
    # couple of milliseconds early relative to the span's clock: 1.9986 s was seen for a 2 s delay)
    slack = 0.01
    assert to_ratings["duration_s"] >= DELAY_S - slack and ratings["duration_s"] + 1 < DELAY_S
    assert min(reviews["duration_s"], pp["duration_s"], gateway["duration_s"]) >= DELAY_S - slack
    assert one("details.bookinfo", "server")["duration_s"] < 1
    assert all(by_id.get(s["parent"]) is not None for s in spans if s is not gateway)
