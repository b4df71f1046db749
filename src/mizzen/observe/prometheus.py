"""A real Prometheus (Debian's ``prometheus``) for the local mesh, configured like Istio's addon
(``samples/addons/prometheus.yaml``): the ``kubernetes-pods`` job with Istio's relabelling, unchanged, fed by
file service discovery (:mod:`.sd`) instead of the Kubernetes API, so every injected pod is scraped on its
agent's merged endpoint (``:15020/stats/prometheus``) and the control plane on its ``/metrics``, labelled
``app``, ``version``, ``namespace``, ``pod`` as Istio's dashboards expect. It listens on loopback only and
keeps its data under the state dir.

:func:`find_binary` says where it is (or :data:`INSTALL_HINT`); :class:`Prometheus` renders the config, starts
and stops the process; :func:`query` runs an instant PromQL query through its HTTP API."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from mizzen.observe.process import Addon, AddonProcess

__all__ = ["DEFAULT_PORT", "INSTALL_HINT", "Prometheus", "PrometheusOptions", "find_binary", "query",
           "render_config"]

DEFAULT_PORT = 9090
INSTALL_HINT = ("Prometheus is not installed: apt-get install prometheus (Debian/Ubuntu), or put a "
                "prometheus binary on PATH")
JOB = "kubernetes-pods"

# Istio's kubernetes-pods job (samples/addons/prometheus.yaml), relabelling verbatim
ISTIO_POD_RELABELING: list[dict[str, Any]] = [
    {"action": "keep", "regex": "true",
     "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]},
    {"action": "drop", "regex": "true",
     "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape_slow"]},
    {"action": "replace", "regex": "(https?)",
     "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scheme"],
     "target_label": "__scheme__"},
    {"action": "replace", "regex": "(.+)",
     "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
     "target_label": "__metrics_path__"},
    {"action": "replace", "regex": r"(\d+);(([A-Fa-f0-9]{1,4}::?){1,7}[A-Fa-f0-9]{1,4})",
     "replacement": "[$2]:$1",
     "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_port", "__meta_kubernetes_pod_ip"],
     "target_label": "__address__"},
    {"action": "replace", "regex": r"(\d+);((([0-9]+?)(\.|$)){4})", "replacement": "$2:$1",
     "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_port", "__meta_kubernetes_pod_ip"],
     "target_label": "__address__"},
    {"action": "labelmap", "regex": "__meta_kubernetes_pod_annotation_prometheus_io_param_(.+)",
     "replacement": "__param_$1"},
    {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
    {"action": "replace", "source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
    {"action": "replace", "source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    {"action": "drop", "regex": "Pending|Succeeded|Failed|Completed",
     "source_labels": ["__meta_kubernetes_pod_phase"]},
    {"action": "replace", "source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
]


def find_binary() -> str | None:
    """The prometheus binary on PATH (Debian installs /usr/bin/prometheus), or None."""
    return shutil.which("prometheus")


@dataclass(frozen=True)
class PrometheusOptions:
    data_dir: Path                      # <state dir>/prometheus: config, targets, tsdb, log
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    scrape_interval_s: float = 15.0     # Istio's addon: 15s; tests use ~1s
    retention: str = "1d"
    # the kubelet's cAdvisor endpoint (``host:port`` of the runner's pod API, /metrics/cadvisor) and the API
    # token file (0600) Prometheus authenticates with; None: no kubernetes-nodes-cadvisor job
    cadvisor_target: str | None = None
    token_file: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def targets_file(self) -> Path:
        return self.data_dir / "targets.json"


def _duration(seconds: float) -> str:
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def render_config(opts: PrometheusOptions) -> str:
    """prometheus.yml: Istio's global settings and its kubernetes-pods job over file SD."""
    interval = _duration(opts.scrape_interval_s)
    timeout = _duration(min(10.0, opts.scrape_interval_s))
    jobs: list[dict[str, Any]] = [{
        "job_name": JOB,
        "honor_labels": True,
        "file_sd_configs": [{"files": [str(opts.targets_file)], "refresh_interval": "5s"}],
        "relabel_configs": ISTIO_POD_RELABELING,
    }]
    if opts.cadvisor_target and opts.token_file is not None:
        # Istio's kubernetes-nodes-cadvisor job: the one local "node" is the runner
        jobs.append({
            "job_name": "kubernetes-nodes-cadvisor",
            "metrics_path": "/metrics/cadvisor",
            "authorization": {"type": "Bearer", "credentials_file": str(opts.token_file)},
            "static_configs": [{"targets": [opts.cadvisor_target], "labels": {"node": "local"}}],
            "relabel_configs": [{"source_labels": ["__metrics_path__"], "target_label": "metrics_path"}],
        })
    doc = {
        "global": {"scrape_interval": interval, "scrape_timeout": timeout, "evaluation_interval": "1m"},
        "scrape_configs": jobs,
    }
    return yaml.safe_dump(doc, sort_keys=False)


class Prometheus(Addon[PrometheusOptions]):
    """Render the config into ``data_dir`` and run ``prometheus`` on ``host:port`` (loopback)."""

    def __init__(self, opts: PrometheusOptions, binary: str | None = None) -> None:
        super().__init__(opts, binary or find_binary())

    async def start(self, timeout: float = 30.0) -> None:
        if self.binary is None:
            raise FileNotFoundError(INSTALL_HINT)
        o = self.opts
        o.data_dir.mkdir(parents=True, exist_ok=True)
        config = o.data_dir / "prometheus.yml"
        config.write_text(render_config(o))
        if not o.targets_file.exists():
            o.targets_file.write_text("[]\n")
        argv = [self.binary, f"--config.file={config}", f"--storage.tsdb.path={o.data_dir / 'data'}",
                f"--storage.tsdb.retention.time={o.retention}", f"--web.listen-address={o.host}:{o.port}",
                "--log.level=warn"]
        self.process = AddonProcess("prometheus", argv, o.data_dir / "prometheus.log", f"{o.url}/-/ready")
        await self.process.start(timeout)


async def query(client: httpx.AsyncClient, url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query; the result vector/matrix (raises ValueError with Prometheus' error)."""
    r = await client.get(f"{url}/api/v1/query", params={"query": promql})
    body = r.json()
    if body.get("status") != "success":
        raise ValueError(f"{body.get('errorType', r.status_code)}: {body.get('error', r.text[:200])}")
    data = body["data"]
    result = data["result"]
    if data.get("resultType") == "scalar":
        return [{"value": result}]
    return list(result)
