"""The addons' generated configuration: Kubernetes-style pod discovery labels for Prometheus' file SD, Istio's
job and relabelling, and Jaeger bound only to its own loopback address."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from mizzen.observe.jaeger import JaegerOptions
from mizzen.observe.jaeger import render_config as jaeger_config
from mizzen.observe.prometheus import ISTIO_POD_RELABELING, PrometheusOptions
from mizzen.observe.prometheus import render_config as prometheus_config
from mizzen.observe.sd import target_groups, write_targets

ISTIO_ADDON = Path(__file__).resolve().parents[1] / "fixtures/istio/samples/addons/prometheus.yaml"


def pod(name: str, ip: str, labels: dict[str, str], containers: list[str],
        annotations: dict[str, str] | None = None, phase: str = "Running") -> dict[str, object]:
    meta: dict[str, object] = {"name": name, "namespace": "bookinfo", "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": {"containers": [{"name": c} for c in containers]},
            "status": {"podIP": ip, "phase": phase, "conditions": [{"type": "Ready", "status": "True"}]}}


def test_pods_become_target_groups_labelled_like_kubernetes_sd() -> None:
    groups = target_groups([
        pod("reviews-v2-abc", "127.20.0.5", {"app": "reviews", "version": "v2", "app.kubernetes.io/x": "y"},
            ["reviews", "istio-proxy"]),
        pod("plain-1", "127.20.0.6", {"app": "plain"}, ["plain"]),
        pod("own-1", "127.20.0.7", {"app": "own"}, ["own", "istio-proxy"],
            {"prometheus.io/scrape": "true", "prometheus.io/port": "9999"}),
        pod("off-1", "127.20.0.8", {"app": "off"}, ["off", "istio-proxy"], {"prometheus.io/scrape": "false"}),
        pod("nomerge-1", "127.20.0.9", {"app": "nomerge"}, ["nomerge", "istio-proxy"],
            {"prometheus.io/scrape": "true", "prometheus.io/port": "9998",
             "prometheus.istio.io/merge-metrics": "false"}),
        pod("pending-1", "", {"app": "pending"}, ["x"], phase="Pending"),
    ])
    by_pod = {g["labels"]["__meta_kubernetes_pod_name"]: g for g in groups}
    assert sorted(by_pod) == ["nomerge-1", "off-1", "own-1", "plain-1", "reviews-v2-abc"]   # no pod IP: none
    reviews = by_pod["reviews-v2-abc"]
    assert reviews["targets"] == ["127.20.0.5"]
    labels = reviews["labels"]
    assert labels["__meta_kubernetes_pod_label_app"] == "reviews"
    assert labels["__meta_kubernetes_pod_label_app_kubernetes_io_x"] == "y"     # Kubernetes SD's mangling
    assert labels["__meta_kubernetes_namespace"] == "bookinfo"
    # Istio's injector annotations on an injected pod: the agent's merged endpoint
    assert labels["__meta_kubernetes_pod_annotation_prometheus_io_port"] == "15020"
    assert labels["__meta_kubernetes_pod_annotation_prometheus_io_path"] == "/stats/prometheus"
    assert "__meta_kubernetes_pod_annotation_prometheus_io_scrape" not in by_pod["plain-1"]["labels"]
    # an injected pod annotated for its app's metrics (Bookinfo's productpage): Istio's metrics merging
    # points Prometheus at the agent, which serves the app's metrics too (its own annotations are the agent's)
    own = by_pod["own-1"]["labels"]
    assert own["__meta_kubernetes_pod_annotation_prometheus_io_port"] == "15020"
    assert own["__meta_kubernetes_pod_annotation_prometheus_io_path"] == "/stats/prometheus"
    # opted out of scraping or of merging: the pod's own annotations stay
    off = by_pod["off-1"]["labels"]
    assert off["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "false"
    assert "__meta_kubernetes_pod_annotation_prometheus_io_port" not in off
    nomerge = by_pod["nomerge-1"]["labels"]
    assert nomerge["__meta_kubernetes_pod_annotation_prometheus_io_port"] == "9998"
    assert "__meta_kubernetes_pod_annotation_prometheus_io_path" not in nomerge


def test_targets_file_is_replaced_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "sd" / "targets.json"
    groups = target_groups([pod("a-1", "127.20.0.9", {"app": "a"}, ["a", "istio-proxy"])])
    assert write_targets(path, groups) is True
    assert write_targets(path, groups) is False
    assert json.loads(path.read_text()) == groups
    assert [p.name for p in path.parent.iterdir()] == ["targets.json"]          # no temp file left


def test_prometheus_runs_istios_kubernetes_pods_job_verbatim(tmp_path: Path) -> None:
    opts = PrometheusOptions(tmp_path, scrape_interval_s=1, cadvisor_target="127.0.0.1:4000",
                             token_file=tmp_path / "token")
    cfg = yaml.safe_load(prometheus_config(opts))
    assert cfg["global"]["scrape_interval"] == "1s"
    pods, cadvisor = cfg["scrape_configs"]
    assert pods["job_name"] == "kubernetes-pods" and pods["honor_labels"] is True
    assert pods["file_sd_configs"][0]["files"] == [str(tmp_path / "targets.json")]
    addon = next(doc for doc in yaml.safe_load_all(ISTIO_ADDON.read_text())
                 if doc and doc.get("kind") == "ConfigMap")
    istio = yaml.safe_load(addon["data"]["prometheus.yml"])
    istio_job = next(j for j in istio["scrape_configs"] if j["job_name"] == "kubernetes-pods")
    # (PyYAML reads Istio's unquoted `regex: true` as a bool; Prometheus reads a string)
    istio_relabel = [{k: "true" if v is True else v for k, v in r.items()}
                     for r in istio_job["relabel_configs"]]
    assert pods["relabel_configs"] == istio_relabel == ISTIO_POD_RELABELING
    assert cadvisor["job_name"] == "kubernetes-nodes-cadvisor"
    assert cadvisor["authorization"]["credentials_file"] == str(tmp_path / "token")   # never the token itself


def test_jaeger_listens_only_on_its_own_address(tmp_path: Path) -> None:
    text = jaeger_config(JaegerOptions(tmp_path, host="127.0.16.86"))
    endpoints = re.findall(r"endpoint: (\S+)", text)
    assert len(endpoints) == 6 and all(e.startswith("127.0.16.86:") for e in endpoints), endpoints
    cfg = yaml.safe_load(text)
    assert cfg["receivers"]["zipkin"]["endpoint"] == "127.0.16.86:9411"
    assert cfg["service"]["telemetry"]["metrics"]["level"] == "none"      # no self-metrics port on 8888


def test_demo_refuses_addon_options_that_would_expose_or_mislead(tmp_path: Path) -> None:
    mizzen = str(Path(sys.executable).parent / "mizzen")
    for args, message in ((["--jaeger-host", "0.0.0.0"], "must be a loopback address"),
                          (["--trace-sampling", "150"], "want a percentage from 0 to 100"),
                          (["--scrape-interval", "0"], "want a positive number of seconds")):
        r = subprocess.run([mizzen, "demo", "--state-dir", str(tmp_path), *args], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_dashboard_commands_without_a_demo(tmp_path: Path) -> None:
    mizzen = str(Path(sys.executable).parent / "mizzen")
    env = {**os.environ, "MIZZEN_STATE_DIR": str(tmp_path)}
    grafana = subprocess.run([mizzen, "dashboard", "grafana"], capture_output=True, text=True, env=env,
                             timeout=60)
    assert grafana.returncode == 0 and "7639" in grafana.stdout and "7645" in grafana.stdout, grafana
    for addon in ("prometheus", "jaeger"):
        r = subprocess.run([mizzen, "dashboard", addon], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 1 and r.stderr.startswith(f"error: no {addon} is running") and \
            r.stderr.count("\n") == 1, r.stderr
    (tmp_path / "addons.json").write_text('{"jaeger": "http://127.0.16.86:16686"}')
    r = subprocess.run([mizzen, "dashboard", "jaeger"], capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.splitlines()[0] == "http://127.0.16.86:16686" and "placeholder" in r.stdout
