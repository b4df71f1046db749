"""Helpers shared by the benchmark scripts: a synthetic Bookinfo-like mesh as Istio YAML, percentiles, RSS.

The mesh is ``services`` HTTP services spread over ``namespaces`` namespaces; each has a Service (port 9080),
a DestinationRule with 2-3 version subsets, ``workloads`` workload instances (labels app/version) and, for
one service in ``vs_every``, a weighted VirtualService. One Gateway + VirtualService expose a few hosts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["MeshShape", "fmt_ms", "mesh_workloads", "mesh_yaml", "pct", "pod_address", "pss_mb", "rss_mb",
           "tree_pids", "vs_yaml"]


def pct(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] if s else float("nan")


def fmt_ms(values: list[float]) -> str:
    """``p50 / p99 / max`` in milliseconds of values given in seconds."""
    if not values:
        return "n/a"
    p50, p99, top = pct(values, 50) * 1000, pct(values, 99) * 1000, max(values) * 1000
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {top:.1f} ms"


def rss_mb(pid: int | str = "self") -> float:
    """VmRSS of a process in MB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0.0


def pss_mb(pid: int | str = "self") -> float:
    """Proportional set size in MB (shared pages such as the Envoy binary split among their users);
    the sum over processes is the memory they really take. 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0.0


def tree_pids(root: int) -> list[int]:
    """``root`` and all its live descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


@dataclass(frozen=True)
class MeshShape:
    services: int = 1000
    namespaces: int = 10
    workloads: int = 3          # instances per service
    vs_every: int = 4           # one service in vs_every gets a VirtualService
    gateway_hosts: int = 20     # hosts routed by the ingress gateway

    def namespace(self, i: int) -> str:
        return f"ns{i % self.namespaces}"

    def name(self, i: int) -> str:
        return f"svc{i}"

    def subsets(self, i: int) -> list[str]:
        return ["v1", "v2"] if i % 2 else ["v1", "v2", "v3"]


def vs_yaml(name: str, namespace: str, weights: tuple[int, int], subsets: tuple[str, str] = ("v1", "v2"),
            timeout_s: int = 0) -> str:
    """A VirtualService splitting ``name``'s traffic between two subsets (the bench's change)."""
    timeout = f"\n    timeout: {timeout_s}s" if timeout_s else ""
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: {namespace}
spec:
  hosts:
  - {name}
  http:
  - route:
    - destination:
        host: {name}
        subset: {subsets[0]}
      weight: {weights[0]}
    - destination:
        host: {name}
        subset: {subsets[1]}
      weight: {weights[1]}{timeout}
"""


def mesh_yaml(shape: MeshShape) -> str:
    """The whole mesh as multi-document Istio/Kubernetes YAML (namespaces set per object)."""
    docs: list[str] = []
    for i in range(shape.services):
        ns, name = shape.namespace(i), shape.name(i)
        docs.append(f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: {name}}}
spec:
  selector: {{app: {name}}}
  ports:
  - name: http
    port: 9080
""")
        subsets = "".join(f"\n  - name: {v}\n    labels: {{version: {v}}}" for v in shape.subsets(i))
        docs.append(f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
  namespace: {ns}
spec:
  host: {name}
  trafficPolicy:
    connectionPool:
      http: {{http1MaxPendingRequests: 100}}
  subsets:{subsets}
""")
        if i % shape.vs_every == 0:
            docs.append(vs_yaml(name, ns, (80, 20)))
    if shape.gateway_hosts:
        docs.append("""apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-gateway
  namespace: istio-system
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
""")
        routes = "".join(
            f"""
  - match:
    - uri: {{prefix: /{shape.name(i)}}}
    route:
    - destination: {{host: {shape.name(i)}.{shape.namespace(i)}.svc.cluster.local, port: {{number: 9080}}}}"""
            for i in range(min(shape.gateway_hosts, shape.services)))
        docs.append(f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bench-ingress
  namespace: istio-system
spec:
  hosts: ["*"]
  gateways: [bench-gateway]
  http:{routes}
""")
    return "---\n".join(docs)


def pod_address(k: int, base: str = "10") -> str:
    """A distinct address for workload ``k`` (``10.a.b.c``, c in 1..250)."""
    return f"{base}.{k // 62500 % 250}.{k // 250 % 250}.{k % 250 + 1}"


def mesh_workloads(shape: MeshShape,
                   address: Callable[[int], str] = pod_address) -> list[tuple[str, str, str, dict[str, str]]]:
    """(namespace, pod name, address, labels) for every workload instance; versions cycle over subsets."""
    out = []
    k = 0
    for i in range(shape.services):
        ns, name, versions = shape.namespace(i), shape.name(i), shape.subsets(i)
        for j in range(shape.workloads):
            v = versions[j % len(versions)]
            out.append((ns, f"{name}-{v}-{j}", address(k), {"app": name, "version": v}))
            k += 1
    return out


async def fast_and_load(cp: Any, agents: list[Any], *, ns: str, server_ip: str, app_ip: str,
                        client_ip: str) -> tuple[Any, Any]:
    """The two sidecars of the telemetry and scrape benches on ``cp``: ``fast-v1`` (the server, in front of
    the app at ``app_ip``:9080) and ``load-v1`` (the client, HTTP proxy on 15080), one worker each, started
    and appended to ``agents`` (the caller stops them); the server registered as a workload."""
    from mizzen.agent.bootstrap import ProxySpec
    from mizzen.agent.envoy import Agent, AgentOptions
    from mizzen.core.proxy import ProxyType
    from mizzen.registry.model import Workload

    opts = AgentOptions(concurrency=1, log_level="error")
    server = Agent(ProxySpec(type=ProxyType.SIDECAR, ip=server_ip, namespace=ns, name="fast-v1",
                             xds_port=cp.xds_port, labels={"app": "fast", "version": "v1"},
                             app_host=app_ip), opts)
    client = Agent(ProxySpec(type=ProxyType.SIDECAR, ip=client_ip, namespace=ns, name="load-v1",
                             xds_port=cp.xds_port, labels={"app": "load", "version": "v1"},
                             http_proxy_port=15080), opts)
    for a in (server, client):
        await a.start(ready_timeout=30)
        agents.append(a)
    cp.register_workload(Workload(name="fast-v1", namespace=ns, address=server_ip,
                                  labels={"app": "fast", "version": "v1"}))
    return server, client
