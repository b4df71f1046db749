"""The Kubernetes objects an install applies, rendered from a merged IstioOperator spec (pure: no I/O but
package data).

Components, in the order they are applied (istioctl's): **Istio core** (``base``: the ``istio-system``
namespace, Istio's CRDs, the ``istio-reader`` ServiceAccount and ClusterRole, the ``istiod-default-validator``
webhook), **Istiod** (``pilot``: ServiceAccount ``istiod``, ClusterRoles like istiod's incl. TokenReview,
Leases, ConfigMaps and webhooks, the ``istio`` ConfigMap with the mesh config, the
``istio-sidecar-injector`` ConfigMap with the injector's config and values, the ``istiod`` Deployment and
Service with ports 15010, 15012, 443->15017 and 15014, the ``istio-validator-<ns>`` webhook of
:mod:`mizzen.kube.webhooks.configuration` and the ``istio-sidecar-injector`` of
:mod:`mizzen.kube.inject.webhook`), **Ingress gateways** and **Egress gateways** (a ServiceAccount, a Role
for gateway Secrets, a Deployment and a Service each).

There is no container runtime in Mizzen's test cluster: a node agent runs a container's ``command``/``args``
as processes. So every container has ``image: <hub>/mizzen:<tag>`` (see the ``Containerfile``) and an
explicit command (``mizzen controlplane ...``, ``mizzen agent ...``).

Every object carries :data:`OWNER_LABEL` (``install.operator.istio.io/owning-resource``, as istioctl's) and
``operator.istio.io/component``, which is what ``uninstall`` and ``verify-install`` select by.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import yaml

from mizzen.config.schema import CRD_FILE
from mizzen.kube.inject.values import DEFAULT_VALUES, merge
from mizzen.kube.inject.webhook import injector_configmap_name, mutating_webhook_configuration
from mizzen.kube.webhooks import configuration as wh

__all__ = ["COMPONENT_LABEL", "OWNER", "OWNER_LABEL", "Component", "render", "to_yaml"]

Obj = dict[str, Any]
OWNER_LABEL = "install.operator.istio.io/owning-resource"
OWNER_NS_LABEL = "install.operator.istio.io/owning-resource-namespace"
COMPONENT_LABEL = "operator.istio.io/component"
OWNER = "installed-state"
DEFAULT_HUB, DEFAULT_TAG = "docker.io/mizzen", "latest"
VALIDATED_GROUPS = ["security.istio.io", "networking.istio.io", "telemetry.istio.io", "extensions.istio.io"]


@dataclass
class Component:
    """One of istioctl's install steps: its name (``Istio core``, ``Istiod``...), the objects applied."""
    name: str
    label: str               # operator.istio.io/component
    objects: list[Obj] = field(default_factory=list)


def _meta(name: str, namespace: str | None, component: str, ns: str, labels: dict[str, str] | None = None,
          annotations: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name,
                 "labels": {**(labels or {}), OWNER_LABEL: OWNER, OWNER_NS_LABEL: ns,
                            COMPONENT_LABEL: component, "app.kubernetes.io/part-of": "mizzen"}}
    if namespace:
        meta["namespace"] = namespace
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _image(spec: Obj, comp: Obj) -> str:
    values_global = ((spec.get("values") or {}).get("global") or {})
    hub = comp.get("hub") or spec.get("hub") or values_global.get("hub") or DEFAULT_HUB
    tag = comp.get("tag") or spec.get("tag") or values_global.get("tag") or DEFAULT_TAG
    if hub == "registry.istio.io/testing":   # Istio's default profile's hub: Istio's images, not Mizzen's
        hub = DEFAULT_HUB
    if tag == "latest" and spec.get("tag") == "latest" and not comp.get("tag"):
        tag = DEFAULT_TAG
    return f"{hub}/mizzen:{tag}"


def _replicas(k8s: Obj) -> int:
    if "replicaCount" in k8s:
        return int(k8s["replicaCount"])
    return int((k8s.get("hpaSpec") or {}).get("minReplicas") or 1)


def _pod_env() -> list[Obj]:
    def ref(name: str, path: str) -> Obj:
        return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}
    return [ref("POD_NAME", "metadata.name"), ref("POD_NAMESPACE", "metadata.namespace"),
            ref("INSTANCE_IP", "status.podIP"), ref("SERVICE_ACCOUNT", "spec.serviceAccountName"),
            ref("NODE_NAME", "spec.nodeName")]


def _customize(container: Obj, pod: Obj, k8s: Obj) -> None:
    """The ``k8s`` settings Mizzen applies to a Deployment's pod (others are accepted, not applied)."""
    if k8s.get("resources"):
        container["resources"] = copy.deepcopy(k8s["resources"])
    if k8s.get("env"):
        container["env"] = [*container.get("env", []), *copy.deepcopy(k8s["env"])]
    if k8s.get("imagePullPolicy"):
        container["imagePullPolicy"] = k8s["imagePullPolicy"]
    if k8s.get("readinessProbe"):
        container["readinessProbe"] = copy.deepcopy(k8s["readinessProbe"])
    if k8s.get("securityContext"):
        container["securityContext"] = copy.deepcopy(k8s["securityContext"])
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        if k8s.get(key):
            pod[key] = copy.deepcopy(k8s[key])


def _deployment(name: str, ns: str, component: str, labels: dict[str, str], sa: str, container: Obj,
                k8s: Obj, volumes: list[Obj]) -> Obj:
    pod: Obj = {"serviceAccountName": sa, "containers": [container], "volumes": volumes}
    _customize(container, pod, k8s)
    annotations = {"sidecar.istio.io/inject": "false", **(k8s.get("podAnnotations") or {})}
    dep: Obj = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": _meta(name, ns, component, ns, labels),
                "spec": {"replicas": _replicas(k8s), "selector": {"matchLabels": dict(labels)},
                         "template": {"metadata": {"labels": {**labels, "sidecar.istio.io/inject": "false"},
                                                   "annotations": annotations},
                                      "spec": pod}}}
    if k8s.get("strategy"):
        dep["spec"]["strategy"] = copy.deepcopy(k8s["strategy"])
    return dep


def _service(name: str, ns: str, component: str, labels: dict[str, str], selector: dict[str, str],
             ports: list[Obj], k8s: Obj, default_type: str = "ClusterIP") -> Obj:
    svc_spec = copy.deepcopy(k8s.get("service") or {})
    if svc_spec.get("ports"):
        ports = svc_spec.pop("ports")
    spec: Obj = {"type": default_type, **svc_spec, "selector": svc_spec.get("selector") or dict(selector),
                 "ports": [{"protocol": "TCP", **p} for p in ports]}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(name, ns, component, ns, labels, k8s.get("serviceAnnotations")), "spec": spec}


# --------------------------------------------------------------------------------------------- base

@cache
def _crd_docs() -> tuple[Obj, ...]:
    """Istio's CRDs as the package has them (parsed once; the C loader: the file is about 1 MB)."""
    text = CRD_FILE.read_text(encoding="utf-8")
    return tuple(d for d in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
                 if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition")


def _crds(ns: str) -> list[Obj]:
    out = []
    for crd in _crd_docs():
        doc = copy.deepcopy(crd)
        meta = doc.setdefault("metadata", {})
        meta.setdefault("labels", {}).update({OWNER_LABEL: OWNER, OWNER_NS_LABEL: ns,
                                              COMPONENT_LABEL: "Base"})
        out.append(doc)
    return out


def _validating_webhooks(ns: str, default_only: bool) -> list[Obj]:
    """The ValidatingWebhookConfigurations of :mod:`mizzen.kube.webhooks.configuration` (kwebhook's), with
    the install's labels: ``istiod-default-validator`` (base) or ``istio-validator-<ns>`` (pilot)."""
    hooks = ([wh.default_validating_webhook_configuration(ns)] if default_only
             else [wh.validating_webhook_configuration(ns)])
    component = "Base" if default_only else "Pilot"
    for h in hooks:
        h["metadata"]["labels"] = {**(h["metadata"].get("labels") or {}), OWNER_LABEL: OWNER,
                                   OWNER_NS_LABEL: ns, COMPONENT_LABEL: component}
    return hooks


def _injection_webhook(ns: str) -> Obj:
    """kinject's ``istio-sidecar-injector`` (:mod:`mizzen.kube.inject.webhook`) with the install's labels."""
    hook = mutating_webhook_configuration(namespace=ns)
    hook["metadata"]["labels"] = {**(hook["metadata"].get("labels") or {}), OWNER_LABEL: OWNER,
                                  OWNER_NS_LABEL: ns, COMPONENT_LABEL: "Pilot"}
    return hook


def _base(spec: Obj, ns: str) -> Component:
    c = Component("Istio core", "Base")
    c.objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(ns, None, "Base", ns)})
    c.objects.extend(_crds(ns))
    reader = {"app": "istio-reader"}
    c.objects.append({"apiVersion": "v1", "kind": "ServiceAccount",
                      "metadata": _meta("istio-reader-service-account", ns, "Base", ns, reader)})
    c.objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                      "metadata": _meta(f"istio-reader-clusterrole-{ns}", None, "Base", ns, reader),
                      "rules": [
                          {"apiGroups": [*VALIDATED_GROUPS, "config.istio.io", "rbac.istio.io"],
                           "resources": ["*"], "verbs": ["get", "list", "watch"]},
                          {"apiGroups": [""],
                           "resources": ["endpoints", "pods", "services", "nodes", "replicationcontrollers",
                                         "namespaces", "secrets"],
                           "verbs": ["get", "list", "watch"]},
                          {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                           "verbs": ["get", "list", "watch"]},
                          {"apiGroups": ["apps"], "resources": ["replicasets"],
                           "verbs": ["get", "list", "watch"]},
                          {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
                           "verbs": ["create"]},
                          {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"],
                           "verbs": ["create"]}]})
    c.objects.append(_binding("ClusterRoleBinding", f"istio-reader-clusterrole-{ns}", None,
                              "ClusterRole", "istio-reader-service-account", ns, "Base", reader))
    if (spec.get("values") or {}).get("global", {}).get("configValidation", True) is not False:
        c.objects.extend(_validating_webhooks(ns, default_only=True))
    return c


def _binding(kind: str, name: str, namespace: str | None, role_kind: str, sa: str, ns: str, component: str,
             labels: dict[str, str], role: str | None = None) -> Obj:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
            "metadata": _meta(name, namespace, component, ns, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role or name},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]}


# -------------------------------------------------------------------------------------------- pilot

ISTIOD_PORTS = [{"name": "grpc-xds", "port": 15010}, {"name": "https-dns", "port": 15012},
                {"name": "https-webhook", "port": 443, "targetPort": 15017},
                {"name": "http-monitoring", "port": 15014}]


def _istiod_rules() -> list[Obj]:
    rw = ["get", "list", "watch", "create", "update", "patch", "delete"]
    return [
        {"apiGroups": ["admissionregistration.k8s.io"],
         "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
         "verbs": ["get", "list", "watch", "update", "patch"]},
        {"apiGroups": [*VALIDATED_GROUPS, "config.istio.io", "rbac.istio.io"], "resources": ["*"],
         "verbs": ["get", "watch", "list"]},
        {"apiGroups": VALIDATED_GROUPS, "resources": ["*/status"], "verbs": ["update", "patch"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods", "nodes", "services", "namespaces", "endpoints", "secrets"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["configmaps"],
         "verbs": ["create", "get", "list", "watch", "update"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests",
                                                             "certificatesigningrequests/approval",
                                                             "certificatesigningrequests/status"],
         "verbs": ["update", "create", "get", "delete", "watch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": rw},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["*"], "verbs": ["get", "watch", "list"]},
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "watch", "list"]},
        # mizzen logs of app containers (its API, behind its token): the API server's pods/log
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]


def _mesh_config_text(spec: Obj) -> str:
    mesh = copy.deepcopy(spec.get("meshConfig") or {})
    mesh.setdefault("rootNamespace", spec.get("namespace") or "istio-system")
    mesh.setdefault("trustDomain", "cluster.local")
    mesh.setdefault("enablePrometheusMerge", True)
    mesh.setdefault("defaultConfig", {}).setdefault("discoveryAddress",
                                                    f"istiod.{mesh['rootNamespace']}.svc:15012")
    return yaml.safe_dump(mesh, sort_keys=True)


def _injector_data(spec: Obj, ns: str) -> dict[str, str]:
    """The chart's ``istio-sidecar-injector`` ConfigMap: ``config`` (policy, selectors, injectedAnnotations,
    defaultTemplates; Mizzen renders Istio's sidecar template itself, so no ``templates``) from the
    ``sidecarInjectorWebhook`` values, and ``values``, the chart values as JSON (the install's
    ``values`` over the chart's defaults, ``spec.hub``/``tag`` as ``global.hub``/``tag``, as istioctl
    translates them)."""
    user = copy.deepcopy(spec.get("values") or {})
    glob = user.setdefault("global", {})
    for key in ("hub", "tag"):
        if spec.get(key) and key not in glob:
            glob[key] = spec[key]
    glob.setdefault("istioNamespace", ns)
    values = merge(DEFAULT_VALUES, user)
    hook = values.get("sidecarInjectorWebhook") or {}
    config = {
        "policy": (values.get("global") or {}).get("proxy", {}).get("autoInject") or "enabled",
        "alwaysInjectSelector": hook.get("alwaysInjectSelector") or [],
        "neverInjectSelector": hook.get("neverInjectSelector") or [],
        "injectedAnnotations": hook.get("injectedAnnotations") or {},
        "defaultTemplates": hook.get("defaultTemplates") or ["sidecar"],
    }
    return {"config": yaml.safe_dump(config, sort_keys=False),
            "values": json.dumps(values, indent=2, sort_keys=True)}


def _pilot(spec: Obj, ns: str) -> Component:
    c = Component("Istiod", "Pilot")
    comp = (spec.get("components") or {}).get("pilot") or {}
    k8s = comp.get("k8s") or {}
    labels = {"app": "istiod", "istio": "pilot", "istio.io/rev": "default"}
    pilot_values = (spec.get("values") or {}).get("pilot") or {}
    if "replicaCount" in pilot_values and "replicaCount" not in k8s:
        k8s = {**k8s, "replicaCount": pilot_values["replicaCount"]}
    c.objects.append({"apiVersion": "v1", "kind": "ServiceAccount",
                      "metadata": _meta("istiod", ns, "Pilot", ns, labels)})
    c.objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                      "metadata": _meta(f"istiod-clusterrole-{ns}", None, "Pilot", ns, labels),
                      "rules": _istiod_rules()})
    c.objects.append(_binding("ClusterRoleBinding", f"istiod-clusterrole-{ns}", None, "ClusterRole", "istiod",
                              ns, "Pilot", labels))
    c.objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                      "metadata": _meta("istiod", ns, "Pilot", ns, labels),
                      "rules": [{"apiGroups": ["networking.istio.io"], "resources": ["gateways"],
                                 "verbs": ["create"]},
                                {"apiGroups": [""], "resources": ["secrets"],
                                 "verbs": ["create", "get", "watch", "list", "update", "delete"]},
                                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["delete"]},
                                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                 "verbs": ["get", "update", "patch", "create"]}]})
    c.objects.append(_binding("RoleBinding", "istiod", ns, "Role", "istiod", ns, "Pilot", labels))
    c.objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": _meta("istio", ns, "Pilot", ns, {"istio.io/rev": "default"}),
                      "data": {"mesh": _mesh_config_text(spec), "meshNetworks": "networks: {}\n"}})
    c.objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": _meta(injector_configmap_name(), ns, "Pilot", ns,
                                        {"istio.io/rev": "default"}),
                      "data": _injector_data(spec, ns)})
    log_level = str(((spec.get("values") or {}).get("global") or {}).get("logging", {}).get("level", "")
                    or "INFO")
    container: Obj = {
        "name": "discovery", "image": _image(spec, comp),
        "command": ["mizzen", "controlplane"],
        "args": ["--in-cluster", "--xds-host", "0.0.0.0", "--xds-port", "15010", "--xds-tls-port", "15012",
                 "--http-host", "0.0.0.0", "--http-port", "15014", "--state-dir", "/var/lib/istio/data",
                 "--log-level", _log_level(log_level)],
        "ports": [{"containerPort": 15010, "name": "grpc-xds", "protocol": "TCP"},
                  {"containerPort": 15012, "name": "tls-xds", "protocol": "TCP"},
                  {"containerPort": 15017, "name": "https-webhooks", "protocol": "TCP"},
                  {"containerPort": 15014, "name": "http-monitoring", "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 15014}, "initialDelaySeconds": 1,
                           "periodSeconds": 3, "timeoutSeconds": 5},
        "env": [*_pod_env(), {"name": "REVISION", "value": "default"},
                {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
                *_analysis_env(spec, pilot_values),
                *[{"name": k, "value": str(v)} for k, v in sorted((pilot_values.get("env") or {}).items())]],
        "volumeMounts": [{"name": "local-certs", "mountPath": "/var/lib/istio/data"}],
    }
    c.objects.append(_deployment("istiod", ns, "Pilot", labels, "istiod", container, k8s,
                                 [{"name": "local-certs", "emptyDir": {"medium": "Memory"}}]))
    c.objects.append(_service("istiod", ns, "Pilot", labels, {"app": "istiod", "istio": "pilot"},
                              copy.deepcopy(ISTIOD_PORTS),
                              {"service": k8s["service"]} if k8s.get("service") else {}))
    if (spec.get("values") or {}).get("global", {}).get("configValidation", True) is not False:
        c.objects.extend(_validating_webhooks(ns, default_only=False))
    c.objects.append(_injection_webhook(ns))
    return c


def _analysis_env(spec: Obj, pilot_values: Obj) -> list[Obj]:
    """Istio's ``values.global.istiod.enableAnalysis`` -> ``PILOT_ENABLE_ANALYSIS`` (analysis messages in the
    config objects' status, :mod:`mizzen.kube.status`); off by default, as in every Istio profile."""
    if "PILOT_ENABLE_ANALYSIS" in (pilot_values.get("env") or {}):
        return []
    istiod = (((spec.get("values") or {}).get("global") or {}).get("istiod") or {})
    enabled = str(istiod.get("enableAnalysis", False)).lower() == "true"
    return [{"name": "PILOT_ENABLE_ANALYSIS", "value": "true" if enabled else "false"}]


def _log_level(level: str) -> str:
    # Istio's scope levels (``default:info``...) -> the control plane's one level
    word = level.rpartition(":")[2].upper()
    return {"WARN": "WARNING", "NONE": "ERROR", "FATAL": "ERROR"}.get(word, word) if word in (
        "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "NONE", "FATAL") else "INFO"


# ----------------------------------------------------------------------------------------- gateways

INGRESS_PORTS = [{"name": "status-port", "port": 15021, "targetPort": 15021},
                 {"name": "http2", "port": 80, "targetPort": 8080},
                 {"name": "https", "port": 443, "targetPort": 8443}]
EGRESS_PORTS = [{"name": "http2", "port": 80, "targetPort": 8080},
                {"name": "https", "port": 443, "targetPort": 8443}]


def _gateway(spec: Obj, ns: str, gw: Obj, ingress: bool) -> list[Obj]:
    name = str(gw["name"])
    gw_ns = str(gw.get("namespace") or ns)
    component = "IngressGateways" if ingress else "EgressGateways"
    istio = "ingressgateway" if ingress else "egressgateway"
    labels = {"app": name, "istio": istio, **{str(k): str(v) for k, v in (gw.get("label") or {}).items()}}
    k8s = gw.get("k8s") or {}
    sa = f"{name}-service-account"
    ports = copy.deepcopy(k8s.get("service", {}).get("ports") or (INGRESS_PORTS if ingress else EGRESS_PORTS))
    port_map = ",".join(f"{p['port']}={p.get('targetPort', p['port'])}" for p in ports
                        if p.get("name") != "status-port" and p.get("port") != 15021)
    label_arg = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    xds = f"istiod.{ns}.svc:15010"
    container: Obj = {
        "name": "istio-proxy", "image": _image(spec, gw),
        "command": ["mizzen", "agent"],
        "args": ["--type", "router", "--ip", "$(INSTANCE_IP)", "--namespace", "$(POD_NAMESPACE)",
                 "--name", "$(POD_NAME)", "--labels", label_arg, "--service-account", sa, "--xds", xds,
                 "--gateway-ports", port_map, "--work-dir", "/etc/istio/proxy"],
        "ports": [{"containerPort": 15021, "name": "status-port", "protocol": "TCP"},
                  *[{"containerPort": int(str(p.get("targetPort", p["port"]))), "protocol": "TCP"}
                    for p in ports if p.get("name") != "status-port"],
                  {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        "env": [*_pod_env(), {"name": "ISTIO_META_ROUTER_MODE", "value": "standard"},
                {"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"}],
        "volumeMounts": [{"name": "istio-envoy", "mountPath": "/etc/istio/proxy"}],
    }
    objs: list[Obj] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(sa, gw_ns, component, ns, labels)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": _meta(f"{name}-sds", gw_ns, component, ns, labels),
         "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch", "list"]}]},
        _binding("RoleBinding", f"{name}-sds", gw_ns, "Role", sa, gw_ns, component, labels),
        _deployment(name, gw_ns, component, labels, sa, container, k8s,
                    [{"name": "istio-envoy", "emptyDir": {}}]),
        _service(name, gw_ns, component, labels, labels, ports, k8s,
                 default_type="LoadBalancer" if ingress else "ClusterIP"),
    ]
    for o in objs:   # the owner namespace label names the install's namespace, not the gateway's
        o["metadata"]["labels"][OWNER_NS_LABEL] = ns
    return objs


def render(spec: Obj) -> list[Component]:
    """The components (in apply order) for a merged IstioOperator ``spec`` (:func:`.operator.load_spec`);
    disabled components are left out."""
    ns = str(spec.get("namespace") or ((spec.get("values") or {}).get("global") or {}).get("istioNamespace")
             or "istio-system")
    comps = spec.get("components") or {}
    out: list[Component] = []
    if (comps.get("base") or {}).get("enabled", True):
        out.append(_base(spec, ns))
    if (comps.get("pilot") or {}).get("enabled", True):
        out.append(_pilot(spec, ns))
    for kind, title, ingress in (("ingressGateways", "Ingress gateways", True),
                                 ("egressGateways", "Egress gateways", False)):
        objs = [o for g in comps.get(kind) or [] if g.get("enabled") for o in _gateway(spec, ns, g, ingress)]
        if objs:
            out.append(Component(title, "IngressGateways" if ingress else "EgressGateways", objs))
    return out


def to_yaml(components: list[Component]) -> str:
    """``manifest generate``'s output: every object, one YAML document each."""
    return yaml.dump_all([o for c in components for o in c.objects], sort_keys=False, explicit_start=True,
                         allow_unicode=True, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))
