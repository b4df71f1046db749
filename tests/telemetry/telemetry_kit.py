"""Helpers for telemetry tests: scrape a proxy's Prometheus endpoint and pick Istio's metrics by labels; a
ratings backend with a client sidecar; a Telemetry resource disabling a metric."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import httpx

from mizzen.agent.bootstrap import STATS_PORT
from mizzen.agent.envoy import Agent

if TYPE_CHECKING:
    from harness import Mesh

_LINE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
_LABEL = re.compile(r'(?P<k>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<v>(?:[^"\\]|\\.)*)"')

Sample = tuple[str, dict[str, str], float]


def parse(text: str) -> list[Sample]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m:
            labels = {lm["k"]: lm["v"] for lm in _LABEL.finditer(m["labels"] or "")}
            out.append((m["name"], labels, float(m["value"])))
    return out


async def scrape(agent: Agent, port: int = STATS_PORT) -> list[Sample]:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        r = await c.get(f"http://{agent.spec.effective_admin_host}:{port}/stats/prometheus")
        r.raise_for_status()
        return parse(r.text)


def total(samples: list[Sample], name: str, **want: str) -> float:
    """Sum of ``name`` samples whose labels include ``want``."""
    return sum(v for n, labels, v in samples
               if n == name and all(labels.get(k) == x for k, x in want.items()))


def series(samples: list[Sample], name: str, **want: str) -> list[dict[str, str]]:
    return [labels for n, labels, _ in samples
            if n == name and all(labels.get(k) == x for k, x in want.items())]


def only(samples: list[Sample], name: str, **want: str) -> dict[str, str]:
    got = series(samples, name, **want)
    assert len(got) == 1, f"{name} {want}: {got}"
    return got[0]


def subset(labels: Mapping[str, str], want: Mapping[str, str]) -> dict[str, tuple[str | None, str]]:
    """The labels that differ from ``want``: {label: (got, want)}."""
    return {k: (labels.get(k), v) for k, v in want.items() if labels.get(k) != v}


def metrics_disabled(name: str, namespace: str, metric: str) -> str:
    """A Telemetry resource in ``namespace`` disabling Prometheus ``metric`` (``ALL_METRICS``,
    ``REQUEST_DURATION``, ...)."""
    return f"""
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  metrics:
  - providers: [{{name: prometheus}}]
    overrides: [{{match: {{metric: {metric}}}, disabled: true}}]
"""


async def ratings_and_client(mesh: Mesh, namespace: str, client_pod: str) -> tuple[Agent, Agent]:
    """A ``ratings`` backend with its sidecar and its Service, and a ``reviews-v2`` client sidecar named
    ``client_pod``, synced: (client sidecar, ratings sidecar)."""
    ratings = await mesh.backend("ratings", "v1", namespace=namespace, sidecar=True)
    client = await mesh.sidecar(namespace, client_pod, {"app": "reviews", "version": "v2"})
    await mesh.apply_yaml(f"""
apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: {namespace}}}
spec:
  selector: {{app: ratings}}
  ports: [{{name: http, port: 9080}}]
""")
    await mesh.wait_synced()
    assert ratings.sidecar is not None
    return client, ratings.sidecar


async def get_ratings_ok(http: httpx.AsyncClient) -> None:
    r = await http.get("http://ratings:9080/")
    assert r.status_code == 200, r.status_code
