"""``mizzen manifest generate`` (pure rendering, no cluster): Istio's profiles, ``--set`` with Istio's paths,
the seed's IstioOperator (section 3.1), and bad input refused in one line with the field's path."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mizzen.cli.main import app
from mizzen.core.mesh import MeshConfig
from mizzen.kube.install.manifests import OWNER, OWNER_LABEL
from mizzen.kube.meshconfig import parse_mesh_config
from mizzen.runner.manifests import parse_container

SEED_OPERATOR = Path(__file__).resolve().parents[1] / "fixtures" / "seed-install" / "istio-operator.yaml"
CRD_COUNT = 15   # src/mizzen/config/schemas/crd-all.gen.yaml


def generate(*args: str) -> list[dict[str, Any]]:
    r = CliRunner().invoke(app, ["manifest", "generate", *args])
    assert r.exit_code == 0, r.output
    return [d for d in yaml.load_all(r.stdout, Loader=yaml.CSafeLoader) if d]


def refused(*args: str) -> str:
    r = CliRunner().invoke(app, ["manifest", "generate", *args])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def names(docs: list[dict[str, Any]], kind: str) -> set[str]:
    return {d["metadata"]["name"] for d in docs if d["kind"] == kind}


def mesh_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    mesh = yaml.safe_load(find(docs, "ConfigMap", "istio")["data"]["mesh"])
    assert isinstance(mesh, dict)
    return mesh


NO_BASE = ("--set", "components.base.enabled=false")   # no CRDs (1 MB): faster where they do not matter


def test_default_profile() -> None:
    docs = generate()
    assert all(d["metadata"]["labels"][OWNER_LABEL] == OWNER for d in docs)
    assert find(docs, "Namespace", "istio-system")
    assert len(names(docs, "CustomResourceDefinition")) == CRD_COUNT
    assert "virtualservices.networking.istio.io" in names(docs, "CustomResourceDefinition")
    assert names(docs, "Deployment") == {"istiod", "istio-ingressgateway"}
    assert names(docs, "ValidatingWebhookConfiguration") == {"istiod-default-validator",
                                                             "istio-validator-istio-system"}
    assert names(docs, "MutatingWebhookConfiguration") == {"istio-sidecar-injector"}
    # the webhooks call istiod through its Service (443 -> 15017)
    for kind, name in (("MutatingWebhookConfiguration", "istio-sidecar-injector"),
                       ("ValidatingWebhookConfiguration", "istio-validator-istio-system"),
                       ("ValidatingWebhookConfiguration", "istiod-default-validator")):
        for hook in find(docs, kind, name)["webhooks"]:
            svc_ref = hook["clientConfig"]["service"]
            assert (svc_ref["name"], svc_ref["namespace"], svc_ref.get("port", 443)) == (
                "istiod", "istio-system", 443), (name, hook)
    assert names(docs, "ServiceAccount") == {"istiod", "istio-reader-service-account",
                                             "istio-ingressgateway-service-account"}
    # istiod's RBAC covers what the control plane does on a cluster
    rules = find(docs, "ClusterRole", "istiod-clusterrole-istio-system")["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    for want in [("authentication.k8s.io", "tokenreviews", "create"),
                 ("coordination.k8s.io", "leases", "update"), ("", "configmaps", "create"),
                 ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "patch"),
                 ("networking.istio.io", "*", "watch"), ("", "secrets", "list"),
                 # the distribution reports (PILOT_ENABLE_STATUS): written, watched, owned by the Pod
                 ("", "configmaps", "update"), ("", "configmaps", "list"), ("", "configmaps", "watch"),
                 ("", "pods", "get")]:
        assert want in granted, want
    # ... and deleted on a clean stop: in istiod's namespace only
    role = find(docs, "Role", "istiod")
    assert role["metadata"]["namespace"] == "istio-system"
    assert {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["delete"]} in role["rules"]
    binding = find(docs, "ClusterRoleBinding", "istiod-clusterrole-istio-system")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "istiod", "namespace": "istio-system"}]

    svc = find(docs, "Service", "istiod")
    assert [(p["port"], p.get("targetPort", p["port"])) for p in svc["spec"]["ports"]] == [
        (15010, 15010), (15012, 15012), (443, 15017), (15014, 15014)]
    dep = find(docs, "Deployment", "istiod")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"].endswith("/mizzen:latest") and c["command"] == ["mizzen", "controlplane"]
    assert "--in-cluster" in c["args"] and pod["serviceAccountName"] == "istiod"
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()

    gw = find(docs, "Deployment", "istio-ingressgateway")
    labels = gw["spec"]["template"]["metadata"]["labels"]
    assert labels["istio"] == "ingressgateway" and labels["app"] == "istio-ingressgateway"
    (g,) = gw["spec"]["template"]["spec"]["containers"]
    assert g["command"] == ["mizzen", "agent"] and g["args"][:2] == ["--type", "router"]
    assert g["args"][g["args"].index("--gateway-ports") + 1] == "80=8080,443=8443"
    gsvc = find(docs, "Service", "istio-ingressgateway")
    assert gsvc["spec"]["type"] == "LoadBalancer"
    assert {p["port"]: p["targetPort"] for p in gsvc["spec"]["ports"]} == {15021: 15021, 80: 8080, 443: 8443}
    # every container is one the node agent (the test cluster's kubelet) can run
    for d in docs:
        if d["kind"] == "Deployment":
            for i, raw in enumerate(d["spec"]["template"]["spec"]["containers"]):
                assert parse_container(raw, f"containers[{i}]").command[0] == "mizzen"
    # the mesh config is one kube/meshconfig honours, with the namespace as root
    mesh, _ = parse_mesh_config(find(docs, "ConfigMap", "istio")["data"]["mesh"], MeshConfig())
    assert mesh.root_namespace == "istio-system" and mesh.access_log_file == ""


def test_profiles_differ_as_istios() -> None:
    demo = generate("--set", "profile=demo", *NO_BASE)
    minimal = generate("--set", "profile=minimal", *NO_BASE)
    assert names(demo, "Deployment") == {"istiod", "istio-ingressgateway", "istio-egressgateway"}
    egress = find(demo, "Deployment", "istio-egressgateway")["spec"]["template"]["metadata"]["labels"]
    assert egress["istio"] == "egressgateway"
    assert find(demo, "Service", "istio-egressgateway")["spec"]["type"] == "ClusterIP"
    assert mesh_of(demo)["accessLogFile"] == "/dev/stdout"
    assert names(minimal, "Deployment") == {"istiod"} and "accessLogFile" not in mesh_of(minimal)
    assert generate("--set", "profile=empty") == []
    # the seed's file enables its ingress gateway itself: that wins over the minimal profile
    assert names(generate("-f", str(SEED_OPERATOR), "--set", "profile=minimal", *NO_BASE), "Deployment") == {
        "istiod", "istio-ingressgateway"}


def test_set_paths() -> None:
    docs = generate(*NO_BASE, "--set", "meshConfig.accessLogFile=/dev/stdout",
                    "--set", "meshConfig.accessLogEncoding=JSON",
                    "--set", "components.ingressGateways[0].enabled=false",
                    "--set", "values.global.proxy.logLevel=debug",
                    "--set", "components.pilot.k8s.replicaCount=2")
    mesh, _ = parse_mesh_config(find(docs, "ConfigMap", "istio")["data"]["mesh"], MeshConfig())
    assert mesh.access_log_file == "/dev/stdout" and mesh.access_log_encoding.upper() == "JSON"
    assert names(docs, "Deployment") == {"istiod"}
    assert find(docs, "Deployment", "istiod")["spec"]["replicas"] == 2
    by_name = generate(*NO_BASE,
                       "--set", "components.ingressGateways[name:istio-ingressgateway].enabled=false")
    assert names(by_name, "Deployment") == {"istiod"}
    # a second ingress gateway, Istio's way: a new list item with its name and label
    two = generate(*NO_BASE, "--set", "components.ingressGateways[1].name=internal-gw",
                   "--set", "components.ingressGateways[1].enabled=true",
                   "--set", "components.ingressGateways[1].label.istio=internal")
    assert names(two, "Deployment") == {"istiod", "istio-ingressgateway", "internal-gw"}
    labels = find(two, "Deployment", "internal-gw")["spec"]["template"]["metadata"]["labels"]
    assert labels["istio"] == "internal" and labels["app"] == "internal-gw"
    assert find(generate(*NO_BASE, "--set", "hub=example.com/x", "--set", "tag=1.26"), "Deployment",
                "istiod")["spec"]["template"]["spec"]["containers"][0]["image"] == "example.com/x/mizzen:1.26"


def test_the_injector_configmap_carries_the_values_and_config(tmp_path: Path) -> None:
    """Like Istio's chart: ``istio-sidecar-injector`` with ``config`` (policy, selectors) and ``values``
    (JSON; ``--set values.*`` and ``hub``/``tag`` in it), which kube-inject reads as the webhook does."""
    docs = generate(*NO_BASE, "--set", "values.global.proxy.holdApplicationUntilProxyStarts=true",
                    "--set", "hub=example.com/x", "--set", "tag=1.26",
                    "--set", "values.sidecarInjectorWebhook.neverInjectSelector[0].matchLabels.team=batch")
    cm = find(docs, "ConfigMap", "istio-sidecar-injector")
    assert cm["metadata"]["namespace"] == "istio-system"
    values = json.loads(cm["data"]["values"])
    assert values["global"]["proxy"]["holdApplicationUntilProxyStarts"] is True
    assert (values["global"]["hub"], values["global"]["tag"]) == ("example.com/x", "1.26")
    config = yaml.safe_load(cm["data"]["config"])
    assert config["policy"] == "enabled" and config["defaultTemplates"] == ["sidecar"]
    assert config["neverInjectSelector"] == [{"matchLabels": {"team": "batch"}}]
    # kube-inject with that ConfigMap as --injectConfigFile and --valuesFile: proxy first, batch skipped
    cm_file = tmp_path / "injector.yaml"
    cm_file.write_text(yaml.safe_dump(cm))
    pods = tmp_path / "pods.yaml"
    pods.write_text("".join(
        f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {n}, labels: {{team: {n}}}}}\n"
        f"spec: {{containers: [{{name: app, image: x}}]}}\n" for n in ("batch", "web")))
    r = CliRunner().invoke(app, ["kube-inject", "-f", str(pods), "--injectConfigFile", str(cm_file),
                                 "--valuesFile", str(cm_file)])
    assert r.exit_code == 0, r.output
    out = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert [[c["name"] for c in d["spec"]["containers"]] for d in out] == [["app"], ["istio-proxy", "app"]]
    assert out[1]["spec"]["containers"][0]["image"] == "example.com/x/proxyv2:1.26"


def test_the_seeds_istio_operator() -> None:
    docs = generate("-f", str(SEED_OPERATOR), *NO_BASE)
    assert names(docs, "Deployment") == {"istiod", "istio-ingressgateway"}   # egress disabled, cni off
    mesh, _ = parse_mesh_config(find(docs, "ConfigMap", "istio")["data"]["mesh"], MeshConfig())
    assert mesh.access_log_file == "/dev/stdout" and mesh.access_log_encoding.upper() == "JSON"
    for name in ("istiod", "istio-ingressgateway"):
        dep = find(docs, "Deployment", name)
        assert dep["spec"]["replicas"] == 2   # hpaSpec.minReplicas
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["resources"] == {"limits": {"cpu": "2", "memory": "2Gi"},
                                  "requests": {"cpu": "100m", "memory": "512Mi"}}
        assert c["image"] == "m.daocloud.io/docker.io/istio/mizzen:latest"
    svc = find(docs, "Service", "istio-ingressgateway")["spec"]
    assert svc["type"] == "NodePort"
    assert [(p["name"], p["port"], p.get("nodePort")) for p in svc["ports"]] == [
        ("status-port", 15020, 30520), ("http2", 80, 30080), ("https", 443, 30443)]
    gw = find(docs, "Deployment", "istio-ingressgateway")["spec"]["template"]["spec"]["containers"][0]
    assert gw["args"][gw["args"].index("--gateway-ports") + 1] == "80=8080,443=8443"


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "meshConfig.accessLogFiel=/dev/stdout"], "spec.meshConfig.accessLogFiel: unknown field"),
    (["--set", "components.ingressGateways[0].enabeld=true"],
     "spec.components.ingressGateways[0].enabeld: unknown field"),
    (["--set", "components.pilot.k8s.replicas=2"], "spec.components.pilot.k8s.replicas: unknown field"),
    (["--set", "values.globl.hub=x"], "spec.values.globl: unknown field"),
    (["--set", "values.global.proxyy.logLevel=debug"], "spec.values.global.proxyy: unknown field"),
    (["--set", "meshConfig.connectTimeout=soon"], "connectTimeout: 'soon' is not a positive duration"),
    (["--set", "components.pilot.enabled=maybe"], "spec.components.pilot.enabled: want true or false"),
    (["--set", "profile=tiny"], "profile 'tiny': unknown"),
    (["--set", "novalue"], "want PATH=VALUE"),
    (["--set", "components.ingressGateways[7].enabled=true"], "[7] is past its end"),
])
def test_bad_set_is_one_line(args: list[str], message: str) -> None:
    assert message in refused(*args)


@pytest.mark.parametrize(("text", "message"), [
    ("""\
     apiVersion: install.istio.io/v1alpha1
     kind: IstioOperator
     spec:
       meshConfig: {accessLogFile: /dev/stdout, acessLogEncoding: JSON}
     """, "op.yaml: spec.meshConfig.acessLogEncoding: unknown field"),
    ("""\
     apiVersion: install.istio.io/v1alpha1
     kind: IstioOperator
     spec:
       components:
         ingressGateways:
         - name: istio-ingressgateway
           k8s: {service: {type: NodePort, ports: [{port: 80, nodeport: 30080}]}}
     """, "op.yaml: spec.components.ingressGateways[0].k8s.service.ports[0].nodeport: unknown field"),
    ("""\
     apiVersion: install.istio.io/v1alpha1
     kind: IstioOperator
     spec: {components: {pilots: {enabled: true}}}
     """, "op.yaml: spec.components.pilots: unknown field"),
    ("""\
     apiVersion: networking.istio.io/v1
     kind: VirtualService
     spec: {}
     """, "want kind IstioOperator"),
    ("spec: [unclosed\n", "op.yaml:2: not YAML"),
])
def test_bad_istio_operator_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "op.yaml"
    f.write_text(textwrap.dedent(text))
    assert message in refused("-f", str(f))


def test_install_without_cluster_or_purge_is_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["install", "-y", "--kubeconfig", str(tmp_path / "none")])
    assert r.exit_code == 1 and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = CliRunner().invoke(app, ["uninstall", "-y"])
    assert r.exit_code == 1 and "--purge" in r.stderr
    r = CliRunner().invoke(app, ["install", "--set", "meshConfig.x=1", "-y"])
    assert r.exit_code == 1 and r.stderr.strip() == "error: --set: spec.meshConfig.x: unknown field"


def test_enable_analysis_sets_istiods_env() -> None:
    """values.global.istiod.enableAnalysis -> PILOT_ENABLE_ANALYSIS (off in every profile, as in Istio)."""
    def env(*args: str) -> dict[str, str]:
        container = find(generate(*NO_BASE, *args), "Deployment", "istiod")["spec"]["template"]["spec"][
            "containers"][0]
        return {e["name"]: e.get("value", "") for e in container["env"]}

    for profile in ("default", "demo", "minimal"):
        assert env("--set", f"profile={profile}")["PILOT_ENABLE_ANALYSIS"] == "false"
    assert env("--set", "values.global.istiod.enableAnalysis=true")["PILOT_ENABLE_ANALYSIS"] == "true"
