"""Sidecar injection, pure (no cluster): ``mizzen kube-inject`` of Istio's unchanged Bookinfo manifest checked
against the semantics of Istio's injection template (no golden file), the policy (label over annotation,
hostNetwork, already injected, namespace selectors of the webhook configuration), Istio's annotations, probe
rewriting, holdApplicationUntilProxyStarts, and the webhook's JSON patch giving the same pod as kube-inject.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mizzen.agent.iptables import parse_flags
from mizzen.kube.inject import InjectConfig, InjectError, inject_pod
from mizzen.kube.inject.policy import inject_required, namespace_selects
from mizzen.kube.inject.template import WorkloadMeta
from mizzen.kube.inject.values import ValuesError
from mizzen.kube.inject.webhook import inject_review, mutating_webhook_configuration
from mizzen.kube.inject.workloads import inject_yaml

ROOT = Path(__file__).resolve().parents[2]
BOOKINFO = ROOT / "tests/fixtures/istio/samples/bookinfo/platform/kube/bookinfo.yaml"   # Istio's, unchanged
MIZZEN = str(Path(sys.executable).with_name("mizzen"))


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def _by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in items}


def _pod(name: str = "web", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns1", **meta},
            "spec": {"containers": [{"name": "app", "image": "example/app",
                                     "ports": [{"containerPort": 8080, "name": "http"}]}]}}


def test_kube_inject_bookinfo_follows_istios_template() -> None:
    original = [d for d in yaml.safe_load_all(BOOKINFO.read_text()) if d]
    r = subprocess.run([MIZZEN, "kube-inject", "-f", str(BOOKINFO)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    out = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in out] == [
        (d["kind"], d["metadata"]["name"]) for d in original]
    deployments = 0
    for before, after in zip(original, out, strict=True):
        if before["kind"] != "Deployment":
            assert after == before                      # Services, ServiceAccounts pass through unchanged
            continue
        deployments += 1
        name = before["metadata"]["name"]
        tmpl, orig = after["spec"]["template"], before["spec"]["template"]
        assert {k: v for k, v in after.items() if k != "spec"} == {
            k: v for k, v in before.items() if k != "spec"}
        assert {k: v for k, v in after["spec"].items() if k != "template"} == {
            k: v for k, v in before["spec"].items() if k != "template"}
        spec, meta = tmpl["spec"], tmpl["metadata"]
        app = orig["spec"]["containers"][0]
        # the app container is untouched (Bookinfo has no probes), the proxy goes last
        assert spec["containers"][0] == app
        assert [c["name"] for c in spec["containers"]] == [app["name"], "istio-proxy"]
        assert [c["name"] for c in spec["initContainers"]] == ["istio-init"]

        init = spec["initContainers"][0]
        assert init["image"] == "docker.io/istio/proxyv2:mizzen"
        assert init["args"][:17] == ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m",
                                     "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"]
        cfg, _apply = parse_flags(init["args"][1:])          # our istio-iptables takes them as they are
        assert cfg.exclude_inbound_ports == (15090, 15021, 15020) and cfg.proxy_uids == (1337,)
        assert init["securityContext"]["capabilities"] == {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
        assert (init["securityContext"]["runAsUser"], init["securityContext"]["runAsNonRoot"]) == (0, False)

        proxy = spec["containers"][1]
        assert proxy["args"] == ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
                                 "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error",
                                 "--log_output_level=default:info"]
        assert proxy["ports"] == [{"containerPort": 15090, "protocol": "TCP", "name": "http-envoy-prom"}]
        env = _env(proxy)
        for var, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"),
                          ("INSTANCE_IP", "status.podIP"), ("SERVICE_ACCOUNT", "spec.serviceAccountName"),
                          ("HOST_IP", "status.hostIP"), ("ISTIO_META_NODE_NAME", "spec.nodeName")):
            assert env[var] == {"fieldRef": {"fieldPath": path}}
        assert env["CA_ADDR"] == "istiod.istio-system.svc:15012"
        assert env["ISTIO_META_CLUSTER_ID"] == "Kubernetes"
        assert env["ISTIO_META_INTERCEPTION_MODE"] == "REDIRECT"
        assert env["ISTIO_META_WORKLOAD_NAME"] == name
        assert env["ISTIO_META_OWNER"] == f"kubernetes://apis/apps/v1/namespaces/default/deployments/{name}"
        assert env["ISTIO_META_APP_CONTAINERS"] == app["name"]
        assert json.loads(env["ISTIO_META_POD_PORTS"]) == [{"containerPort": 9080}]
        pc = json.loads(env["PROXY_CONFIG"])
        assert pc["discoveryAddress"] == "istiod.istio-system.svc:15012"
        assert pc["terminationDrainDuration"] == "5s"
        assert "ISTIO_KUBE_APP_PROBERS" not in env
        assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}
        assert proxy["startupProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}
        sc = proxy["securityContext"]
        assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"], sc["readOnlyRootFilesystem"]) == (
            1337, 1337, True, True)
        mounts = {m["name"]: m["mountPath"] for m in proxy["volumeMounts"]}
        assert mounts["istio-podinfo"] == "/etc/istio/pod"
        assert mounts["istio-token"] == "/var/run/secrets/tokens"
        assert mounts["istiod-ca-cert"] == "/var/run/secrets/istio"
        assert mounts["istio-envoy"] == "/etc/istio/proxy"

        vols = _by_name(spec["volumes"])
        for v in orig["spec"].get("volumes") or []:
            assert vols[v["name"]] == v
        assert vols["istio-token"]["projected"]["sources"][0]["serviceAccountToken"] == {
            "path": "istio-token", "expirationSeconds": 43200, "audience": "istio-ca"}
        assert vols["istiod-ca-cert"]["configMap"] == {"name": "istio-ca-root-cert"}
        assert vols["istio-envoy"] == {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}
        assert [i["fieldRef"]["fieldPath"] for i in vols["istio-podinfo"]["downwardAPI"]["items"]] == [
            "metadata.labels", "metadata.annotations"]

        labels, ann = meta["labels"], meta["annotations"]
        assert labels["security.istio.io/tlsMode"] == "istio"
        assert labels["service.istio.io/canonical-name"] == orig["metadata"]["labels"]["app"]
        assert labels["service.istio.io/canonical-revision"] == orig["metadata"]["labels"]["version"]
        assert ann["istio.io/rev"] == "default"
        assert ann["kubectl.kubernetes.io/default-container"] == app["name"]
        assert (ann["prometheus.io/port"], ann["prometheus.io/path"]) == ("15020", "/stats/prometheus")
        status = json.loads(ann["sidecar.istio.io/status"])
        assert status["initContainers"] == ["istio-init"] and status["containers"] == ["istio-proxy"]
        assert set(status["volumes"]) == set(vols) - {v["name"] for v in orig["spec"].get("volumes") or []}
        assert status["revision"] == "default"
    assert deployments == 6

    # idempotent: injecting the output again changes nothing (already injected)
    assert [d for d in yaml.safe_load_all(inject_yaml(r.stdout, InjectConfig())) if d] == out


def test_inject_policy_label_annotation_hostnetwork_namespaces() -> None:
    cfg = InjectConfig()
    assert inject_required(_pod(), "ns1") == (True, "policy enabled")
    off = _pod(labels={"sidecar.istio.io/inject": "false"})
    assert not inject_required(off, "ns1")[0]
    # the label wins over the annotation
    both = _pod(labels={"sidecar.istio.io/inject": "true"}, annotations={"sidecar.istio.io/inject": "false"})
    assert inject_required(both, "ns1")[0]
    assert not inject_required(_pod(annotations={"sidecar.istio.io/inject": "false"}), "ns1")[0]
    host = _pod()
    host["spec"]["hostNetwork"] = True
    assert inject_required(host, "ns1") == (False, "hostNetwork pod")
    assert not inject_required(_pod(), "kube-system")[0]
    injected = inject_pod(_pod(), cfg)
    assert inject_required(injected, "ns1") == (False, "already injected")
    disabled = InjectConfig.parse(inject_config_text="policy: disabled\n")
    assert not inject_required(_pod(), "ns1", disabled.values)[0]
    assert inject_required(_pod(labels={"sidecar.istio.io/inject": "true"}), "ns1", disabled.values)[0]
    never = InjectConfig.parse(inject_config_text="neverInjectSelector: [{matchLabels: {app: legacy}}]\n")
    assert not inject_required(_pod(labels={"app": "legacy"}), "ns1", never.values)[0]

    # the webhook configuration's selectors: who is sent to the injector at all
    assert namespace_selects({"istio-injection": "enabled"}, {})
    assert not namespace_selects({"istio-injection": "enabled"}, {"sidecar.istio.io/inject": "false"})
    assert not namespace_selects({"istio-injection": "disabled"}, {"sidecar.istio.io/inject": "true"})
    assert not namespace_selects({}, {})
    assert namespace_selects({}, {"sidecar.istio.io/inject": "true"})
    assert namespace_selects({"istio.io/rev": "default"}, {})
    assert not namespace_selects({"istio.io/rev": "canary"}, {})
    assert namespace_selects({"istio.io/rev": "canary"}, {}, revision="canary")
    mwc = mutating_webhook_configuration()
    assert mwc["metadata"]["name"] == "istio-sidecar-injector"
    assert {w["clientConfig"]["service"]["path"] for w in mwc["webhooks"]} == {"/inject"}
    assert all(w["rules"][0]["resources"] == ["pods"] and w["rules"][0]["operations"] == ["CREATE"]
               and w["failurePolicy"] == "Fail" and w["sideEffects"] == "None" for w in mwc["webhooks"])


def test_annotations_probes_hold_and_proxy_config() -> None:
    pod = _pod(annotations={
        "traffic.sidecar.istio.io/excludeOutboundPorts": "5432,6379",
        "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.96.0.0/12",
        "traffic.sidecar.istio.io/excludeInboundPorts": "9999",
        "sidecar.istio.io/proxyCPU": "50m", "sidecar.istio.io/proxyMemoryLimit": "64Mi",
        "sidecar.istio.io/logLevel": "debug",
        "proxy.istio.io/config": "holdApplicationUntilProxyStarts: true\nterminationDrainDuration: 12s\n",
        "prometheus.io/scrape": "true", "prometheus.io/port": "9000"})
    app = pod["spec"]["containers"][0]
    app["readinessProbe"] = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 3,
                             "timeoutSeconds": 2}
    app["livenessProbe"] = {"tcpSocket": {"port": 8080}}
    out = inject_pod(pod, InjectConfig.parse(mesh_text="defaultConfig: {discoveryAddress: 'cp:15010'}\n"))
    spec = out["spec"]
    # hold: the proxy first, with pilot-agent's wait as its postStart hook
    assert [c["name"] for c in spec["containers"]] == ["istio-proxy", "app"]
    proxy = spec["containers"][0]
    assert proxy["lifecycle"] == {"postStart": {"exec": {"command": ["pilot-agent", "wait"]}}}
    args = spec["initContainers"][0]["args"]
    assert args[args.index("-o") + 1] == "5432,6379"
    assert args[args.index("-i") + 1] == "10.96.0.0/12"
    assert args[args.index("-d") + 1] == "15090,15021,9999,15020"
    assert "--proxyLogLevel=debug" in proxy["args"]
    assert proxy["resources"] == {"requests": {"cpu": "50m"}, "limits": {"memory": "64Mi"}}
    env = _env(proxy)
    pc = json.loads(env["PROXY_CONFIG"])
    assert (pc["holdApplicationUntilProxyStarts"], pc["terminationDrainDuration"],
            pc["discoveryAddress"]) == (True, "12s", "cp:15010")
    # probes rewritten to the agent, the originals (named port resolved) handed over
    app = _by_name(spec["containers"])["app"]
    assert app["readinessProbe"] == {
        "periodSeconds": 3, "timeoutSeconds": 2,
        "httpGet": {"path": "/app-health/app/readyz", "port": 15020, "scheme": "HTTP"}}
    assert app["livenessProbe"]["httpGet"]["path"] == "/app-health/app/livez"
    assert json.loads(env["ISTIO_KUBE_APP_PROBERS"]) == {
        "/app-health/app/livez": {"tcpSocket": {"port": 8080}},
        "/app-health/app/readyz": {"httpGet": {"path": "/ready", "port": 8080}, "timeoutSeconds": 2}}
    # the app's own metrics move to the agent's merge
    assert json.loads(env["ISTIO_PROMETHEUS_ANNOTATIONS"]) == {"port": "9000", "scrape": "true"}
    assert out["metadata"]["annotations"]["prometheus.io/port"] == "15020"

    no_rewrite = copy.deepcopy(pod)
    no_rewrite["metadata"]["annotations"]["sidecar.istio.io/rewriteAppHTTPProbers"] = "false"
    out2 = inject_pod(no_rewrite, InjectConfig())
    assert _by_name(out2["spec"]["containers"])["app"]["readinessProbe"]["httpGet"]["port"] == "http"
    assert "ISTIO_KUBE_APP_PROBERS" not in _env(_by_name(out2["spec"]["containers"])["istio-proxy"])

    # an istio-proxy container in the pod overrides the template's fields
    custom = _pod()
    custom["spec"]["containers"].append({"name": "istio-proxy", "image": "my/proxyv2:x",
                                         "env": [{"name": "EXTRA", "value": "1"}]})
    proxy = _by_name(inject_pod(custom, InjectConfig())["spec"]["containers"])["istio-proxy"]
    assert proxy["image"] == "my/proxyv2:x" and _env(proxy)["EXTRA"] == "1" and "POD_NAME" in _env(proxy)

    with pytest.raises(InjectError, match=r"sidecar\.istio\.io/userVolume"):
        inject_pod(_pod(annotations={"sidecar.istio.io/userVolume": "{nope"}), InjectConfig())
    with pytest.raises(ValuesError, match="values: not YAML"):
        InjectConfig.parse(values_text="global: [")


def _apply_patch(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = out
        for p in parts[:-1]:
            parent = parent[p]
        if op["op"] == "remove":
            del parent[parts[-1]]
        else:
            assert op["op"] in ("add", "replace")
            parent[parts[-1]] = op["value"]
    return out


def test_webhook_patch_gives_the_kube_inject_pod() -> None:
    cfg = InjectConfig()
    deployment = next(d for d in yaml.safe_load_all(BOOKINFO.read_text())
                      if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "reviews-v2")
    deployment["metadata"]["namespace"] = "bookinfo"
    via_file = yaml.safe_load(inject_yaml(yaml.safe_dump(deployment), cfg))["spec"]["template"]
    # the pod the ReplicaSet controller creates from that template, as the API server hands it to the webhook
    template = deployment["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {**copy.deepcopy(template["metadata"]), "generateName": "reviews-v2-7d4f9c8b5-",
                        "namespace": "bookinfo",
                        "labels": {**template["metadata"]["labels"], "pod-template-hash": "7d4f9c8b5"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                             "controller": True, "name": "reviews-v2-7d4f9c8b5",
                                             "uid": "u1"}]},
           "spec": copy.deepcopy(template["spec"])}
    resp = inject_review({"uid": "abc", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                          "namespace": "bookinfo", "operation": "CREATE", "object": pod}, cfg)
    assert resp["uid"] == "abc" and resp["allowed"] and resp["patchType"] == "JSONPatch"
    patched = _apply_patch(pod, json.loads(base64.b64decode(resp["patch"])))
    assert patched["spec"] == via_file["spec"]            # same function, same pod spec as kube-inject
    assert patched["metadata"]["annotations"] == via_file["metadata"]["annotations"]
    proxy_env = _env(_by_name(patched["spec"]["containers"])["istio-proxy"])
    assert proxy_env["ISTIO_META_WORKLOAD_NAME"] == "reviews-v2"

    off = copy.deepcopy(pod)
    off["metadata"]["labels"]["sidecar.istio.io/inject"] = "false"
    assert inject_review({"uid": "x", "namespace": "bookinfo", "object": off}, cfg) == {
        "uid": "x", "allowed": True}
    bad = copy.deepcopy(pod)
    bad["spec"]["containers"] = []
    r = inject_review({"uid": "y", "namespace": "bookinfo", "object": bad}, cfg)
    assert r["allowed"] is False and r["status"]["message"].startswith("injection failed: spec.containers")
    assert inject_pod(pod, cfg, WorkloadMeta("reviews-v2", "bookinfo", "apps/v1", "Deployment"))["spec"] == \
        patched["spec"]


def test_kube_inject_cli_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Deployment\nmetadata: {name: x}\nspec: {template: [\n")
    r = subprocess.run([MIZZEN, "kube-inject", "-f", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "not YAML" in r.stderr and r.stdout == ""
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("defaultConfig: 3\n")
    r = subprocess.run([MIZZEN, "kube-inject", "-f", str(BOOKINFO), "--meshConfigFile", str(mesh)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == (
        "error: mesh config: defaultConfig must be a mapping (Istio's ProxyConfig)")
    # the istio ConfigMap works as the mesh config file, as istioctl's does
    mesh_cm = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio"},
                              "data": {"mesh": "defaultConfig:\n  discoveryAddress: cp.example:15010\n"}})
    text = inject_yaml(BOOKINFO.read_text(), InjectConfig.parse(mesh_text=mesh_cm))
    assert '"discoveryAddress":"cp.example:15010"' in text
