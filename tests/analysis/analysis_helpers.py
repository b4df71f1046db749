"""Helpers for the analyzer tests: load YAML text like the CLI does and run every analyzer over it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from mizzen.analysis import AnalysisIssue, analyze
from mizzen.config.loader import load_text
from mizzen.config.model import ConfigSnapshot
from mizzen.registry.model import Workload
from mizzen.registry.registry import build_snapshot

ISTIO_MESSAGES = Path(__file__).resolve().parents[1] / "fixtures" / "istio" / "messages.yaml"
SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {app: reviews}}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["bookinfo.example.com"]
---
"""


def run(text: str, *, registry: bool = True, workloads: Sequence[Workload] = (),
        gateway_workloads: Sequence[Workload] | None = None, namespace: str = "bookinfo",
        ignore: Sequence[str] = ("IST0173",)) -> list[AnalysisIssue]:
    """Every message except the ``ignore``d codes (by default IST0173, which every subset gets when the test
    gives no pods)."""
    result = load_text(text, "t.yaml")
    assert not result.errors, [str(e) for e in result.errors]
    # objects without metadata.namespace land in ``namespace`` (the loader's -n refuses explicit others)
    configs = [dataclasses.replace(c, created=float(i),
                                   namespace=namespace if c.namespace == "default" else c.namespace)
               for i, c in enumerate(result.configs)]
    snap = ConfigSnapshot.of(configs)
    reg = build_snapshot(snap, workloads) if registry else None
    return [i for i in analyze(snap, reg, gateway_workloads=gateway_workloads) if i.code not in ignore]


def gateway_pod(name: str = "istio-ingressgateway-0", namespace: str = "istio-system",
                **labels: str) -> Workload:
    """A gateway workload (pod) Gateways can select."""
    return Workload(name=name, namespace=namespace, address="127.0.0.8",
                    labels=labels or {"istio": "ingressgateway", "app": "istio-ingressgateway"})


def brief(issues: Sequence[AnalysisIssue]) -> list[tuple[str, str, str, int]]:
    """(code, Kind/name, path, line) per message."""
    return [(i.code, f"{i.kind}/{i.name}", i.path, i.line) for i in issues]


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the ``nth`` line containing ``needle``."""
    found = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return found[nth - 1]
