"""``/inject`` follows the revision's ``istio-sidecar-injector`` ConfigMap on a real API server, as Istio's
webhook does: with no ConfigMap the chart's defaults inject; once the ConfigMap says
``global.proxy.holdApplicationUntilProxyStarts: true`` (in ``data.values``) a pod created afterwards has its
proxy first; once ``data.config`` has a ``neverInjectSelector`` matching a pod, that pod is admitted without a
sidecar; a ConfigMap that cannot be used keeps the last good config. ``mizzen kube-inject --kubeconfig``
reads the same ConfigMap and gives the webhook's result. Pods here are never scheduled to a node (no node
agent): the webhook acts at creation, which is all this test looks at."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import textwrap
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mizzen.cli.main import app
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.mesh import MeshConfig
from mizzen.kube.inject.webhook import injector_configmap_name, mutating_webhook_configuration

pytestmark = pytest.mark.e2e

NS, SYSTEM, REVISION = "mzicm", "mzicm-system", "mzicm"
CM = injector_configmap_name(REVISION)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def kubectl(cluster: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl off the event loop (the webhook it calls runs on this loop)."""
    argv = [str(cluster.bin / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args]
    return await asyncio.to_thread(subprocess.run, argv, input=stdin, capture_output=True, text=True,
                                   timeout=60)


def pod(name: str, labels: dict[str, str] | None = None) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": NS, "labels": {"app": name, **(labels or {})}},
                       "spec": {"containers": [{"name": "app", "image": "example/app",
                                                "command": ["sleep", "3600"]}]}})


async def create(cluster: Any, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Create the pod and return it as the API server stored it (after the webhook)."""
    r = await kubectl(cluster, "create", "-o", "json", "-f", "-", stdin=pod(name, labels))
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def containers(p: dict[str, Any]) -> list[str]:
    return [c["name"] for c in p["spec"]["containers"]]


async def set_configmap(cluster: Any, values: dict[str, Any], config: dict[str, Any] | str) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CM, "namespace": SYSTEM},
          "data": {"values": json.dumps(values),
                   "config": config if isinstance(config, str) else yaml.safe_dump(config)}}
    r = await kubectl(cluster, "apply", "-f", "-", stdin=json.dumps(cm))
    assert r.returncode == 0, r.stderr


def seen(cp: ControlPlane) -> dict[str, str]:
    """The injector ConfigMap's data as the control plane's watch has it."""
    return (cp.kube_registry.injector_data if cp.kube_registry is not None else None) or {}


async def until(cond: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s")
        await asyncio.sleep(0.1)


async def test_inject_follows_the_injector_configmap(kube_cluster: Any, caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    host = kube_cluster.net.addr.host_ip
    port = _free_port(host)
    await kubectl(kube_cluster, "create", "namespace", SYSTEM)
    await kubectl(kube_cluster, "create", "namespace", NS)
    await kubectl(kube_cluster, "label", "namespace", NS, f"istio.io/rev={REVISION}")
    mwc = mutating_webhook_configuration(REVISION, namespace=SYSTEM)
    mwc["webhooks"] = [h for h in mwc["webhooks"] if h["name"].startswith("rev.")]
    for h in mwc["webhooks"]:
        h["clientConfig"] = {"url": f"https://{host}:{port}/inject"}
    r = await kubectl(kube_cluster, "create", "-f", "-", stdin=json.dumps(mwc))
    assert r.returncode == 0, r.stderr
    cp = ControlPlane(ControlPlaneOptions(kubeconfig=kube_cluster.kubeconfig, xds_port=0, xds_tls_port=0,
                                          http_port=None, webhook_port=port, webhook_host=host,
                                          revision=REVISION, mesh=MeshConfig(root_namespace=SYSTEM)))
    try:
        with caplog.at_level("INFO", logger="mizzen.controlplane.server"):
            await cp.start()

            async def patched() -> bool:
                r = await kubectl(kube_cluster, "get", "mutatingwebhookconfiguration", CM, "-o", "json")
                hooks = json.loads(r.stdout)["webhooks"] if r.returncode == 0 else []
                return bool(hooks) and all(h["clientConfig"].get("caBundle") for h in hooks)

            await until(patched, 20, "the injector's caBundle patched")
            # no ConfigMap: the chart's defaults, and a log line saying so
            assert f"ConfigMap {SYSTEM}/{CM} absent; injecting with the chart's defaults" in caplog.text
            first = await create(kube_cluster, "before")
            assert containers(first) == ["app", "istio-proxy"]

            # holdApplicationUntilProxyStarts in the ConfigMap's values: the proxy goes first
            await set_configmap(kube_cluster, {"global": {"proxy": {"holdApplicationUntilProxyStarts": True}},
                                               "revision": REVISION},
                                {"policy": "enabled", "neverInjectSelector": [],
                                 "injectedAnnotations": {"example.com/injected-by": "configmap"}})

            async def held() -> bool:
                return "holdApplication" in seen(cp).get("values", "")

            await until(held, 15, "the ConfigMap seen by the control plane")
            second = await create(kube_cluster, "after")
            assert containers(second) == ["istio-proxy", "app"]
            assert second["metadata"]["annotations"]["example.com/injected-by"] == "configmap"
            status = json.loads(second["metadata"]["annotations"]["sidecar.istio.io/status"])
            assert status["revision"] == REVISION

            # a neverInjectSelector in the ConfigMap's config: a matching pod gets no sidecar, others do
            hold = {"global": {"proxy": {"holdApplicationUntilProxyStarts": True}}}
            await set_configmap(kube_cluster, hold, {"policy": "enabled",
                                 "neverInjectSelector": [{"matchLabels": {"team": "batch"}}]})

            async def never() -> bool:
                return "batch" in seen(cp).get("config", "")

            await until(never, 15, "the neverInjectSelector seen")
            skipped = await create(kube_cluster, "batch", {"team": "batch"})
            assert containers(skipped) == ["app"]
            assert "sidecar.istio.io/status" not in (skipped["metadata"].get("annotations") or {})
            assert containers(await create(kube_cluster, "web", {"team": "web"})) == ["istio-proxy", "app"]

            # kube-inject --kubeconfig reads the same ConfigMap (from the cluster) and agrees
            r2 = await asyncio.to_thread(CliRunner().invoke, app, [
                "kube-inject", "-f", "-", "--kubeconfig", str(kube_cluster.kubeconfig), "-i", SYSTEM,
                "--revision", REVISION], input=pod("batch2", {"team": "batch"}) + "\n---\n" + pod("web2"))
            assert r2.exit_code == 0, r2.output
            offline = [d for d in yaml.safe_load_all(r2.stdout) if d]
            assert [containers(d) for d in offline] == [["app"], ["istio-proxy", "app"]]

            # a ConfigMap that cannot be used: logged, the last good config kept
            caplog.clear()
            await set_configmap(kube_cluster, {}, "policy: sometimes\n")

            async def logged() -> bool:
                return "keeping the last good config" in caplog.text

            await until(logged, 15, "the bad ConfigMap logged")
            assert containers(await create(kube_cluster, "batch3", {"team": "batch"})) == ["app"]

            # the ConfigMap removed: the chart's defaults again (inject, proxy last)
            await kubectl(kube_cluster, "delete", "configmap", "-n", SYSTEM, CM)

            async def gone() -> bool:
                return cp.kube_registry is not None and cp.kube_registry.injector_data is None

            await until(gone, 15, "the ConfigMap's removal seen")
            last = await create(kube_cluster, "batch4", {"team": "batch"})
            assert containers(last) == ["app", "istio-proxy"]
    finally:
        await cp.stop()
        await kubectl(kube_cluster, "delete", "mutatingwebhookconfiguration", CM, "--ignore-not-found")
        with contextlib.suppress(Exception):
            for ns in (NS, SYSTEM):
                await kubectl(kube_cluster, "delete", "namespace", ns, "--wait=false")


def test_kube_inject_without_the_configmap_says_so_in_one_line(kube_cluster: Any) -> None:
    r = CliRunner().invoke(app, ["kube-inject", "-f", "-", "--kubeconfig", str(kube_cluster.kubeconfig),
                                 "-i", "mzicm-nowhere"], input=pod("x"))
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert r.stderr.strip() == textwrap.dedent(
        "error: ConfigMap mzicm-nowhere/istio-sidecar-injector not found: is the control plane installed "
        "(--istioNamespace, --revision), or give --injectConfigFile and --valuesFile").strip(), r.stderr
