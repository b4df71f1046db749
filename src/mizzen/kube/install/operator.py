"""The IstioOperator spec an install is made from, as ``istioctl`` builds it (pure, no I/O but the profiles).

Order, as istioctl's: Istio's ``default`` profile, overlaid by the selected profile (``demo``, ``minimal``,
``empty``; from ``--set profile=``, else the files' ``spec.profile``, else ``default``), then each ``-f``
IstioOperator file in order, then every ``--set path=value``. Mappings merge key by key; lists of gateways
merge by ``name`` (as Istio's strategic merge does); other lists and scalars are replaced.

``--set`` takes Istio's paths: ``meshConfig.accessLogFile=/dev/stdout``,
``values.global.proxy.logLevel=debug``, ``components.ingressGateways[0].enabled=false`` or
``components.ingressGateways[name:istio-ingressgateway].enabled=false``; ``true``/``false`` and integers are
typed, everything else stays a string (so a ``tag`` like
``1.26`` is not a number).

Every field is checked against IstioOperator's schema: ``spec``'s fields, the components and their ``k8s``
settings, MeshConfig's top-level fields (the honoured ones also by value, with :mod:`mizzen.kube.meshconfig`),
and the top level of ``values`` and ``values.global`` (deeper ``values`` are Helm values: not checked). An
unknown field is an :class:`InstallError` naming its path, one line.
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mizzen.core.mesh import MeshConfig
from mizzen.kube.meshconfig import MeshConfigError, parse_mesh_config

__all__ = ["PROFILES", "InstallError", "apply_set", "check", "load_spec", "merge"]

PROFILES = ("default", "demo", "minimal", "empty")
Spec = dict[str, Any]


class InstallError(ValueError):
    """An IstioOperator, profile or ``--set`` that cannot be used (one line)."""


# IstioOperatorSpec (istio/api operator/v1alpha1)
SPEC_FIELDS = frozenset({"profile", "installPackagePath", "hub", "tag", "namespace", "revision",
                         "compatibilityVersion", "meshConfig", "components", "values", "unvalidatedValues"})
COMPONENTS = frozenset({"base", "pilot", "cni", "ztunnel", "istiodRemote"})
GATEWAY_COMPONENTS = frozenset({"ingressGateways", "egressGateways"})
COMPONENT_FIELDS = frozenset({"enabled", "namespace", "hub", "tag", "k8s", "spec", "label"})
GATEWAY_FIELDS = frozenset({"name", "namespace", "label", "enabled", "hub", "tag", "k8s"})
# KubernetesResourcesSpec
K8S_FIELDS = frozenset({"affinity", "env", "hpaSpec", "imagePullPolicy", "nodeSelector",
                        "podDisruptionBudget", "podAnnotations", "priorityClassName", "readinessProbe",
                        "replicaCount", "resources", "service", "strategy", "tolerations",
                        "serviceAnnotations", "securityContext", "volumes", "volumeMounts", "overlays"})
# MeshConfig's fields (istio/api mesh/v1alpha1/config.proto)
MESH_FIELDS = frozenset({
    "proxyListenPort", "proxyInboundListenPort", "proxyHttpPort", "connectTimeout",
    "protocolDetectionTimeout", "tcpKeepalive", "ingressClass", "ingressService", "ingressControllerMode",
    "ingressSelector", "enableTracing", "accessLogFile", "accessLogFormat", "accessLogEncoding",
    "enableEnvoyAccessLogService", "disableEnvoyListenerLog", "defaultConfig", "outboundTrafficPolicy",
    "inboundTrafficPolicy", "configSources", "enableAutoMtls", "trustDomain", "trustDomainAliases",
    "caCertificates", "defaultServiceExportTo", "defaultVirtualServiceExportTo",
    "defaultDestinationRuleExportTo", "rootNamespace", "localityLbSetting", "dnsRefreshRate",
    "h2UpgradePolicy", "inboundClusterStatName", "outboundClusterStatName", "certificates",
    "serviceSettings", "enablePrometheusMerge", "verifyCertificateAtClient", "ca", "extensionProviders",
    "defaultProviders", "discoverySelectors", "pathNormalization", "defaultHttpRetryPolicy", "meshMTLS",
    "tlsDefaults", "serviceScopeConfigs", "sdsUdsPath", "thriftConfig", "mixerCheckServer",
    "mixerReportServer", "disablePolicyChecks", "policyCheckFailOpen", "sidecarToTelemetrySessionAffinity",
    "meshNetworks", "ingressStatusPort"})
# the top of istio-discovery's / base's Helm values (the rest of ``values`` is free-form here)
VALUES_FIELDS = frozenset({
    "global", "pilot", "gateways", "meshConfig", "telemetry", "sidecarInjectorWebhook", "istiodRemote",
    "revision", "revisionTags", "ownerName", "base", "defaultRevision", "profile", "cni", "ztunnel",
    "istio_cni", "gatewayClasses", "experimental", "platform", "resourceScope", "compatibilityVersion",
    "envoyFilters"})
GLOBAL_FIELDS = frozenset({
    "hub", "tag", "variant", "istioNamespace", "configValidation", "proxy", "proxy_init", "imagePullPolicy",
    "imagePullSecrets", "logging", "logAsJson", "meshID", "meshNetworks", "multiCluster", "network",
    "omitSidecarInjectorConfigMap", "operatorManageWebhooks", "pilotCertProvider", "priorityClassName",
    "defaultPodDisruptionBudget", "defaultResources", "defaultNodeSelector", "defaultTolerations",
    "jwtPolicy", "mountMtlsCerts", "caAddress", "caName", "externalIstiod", "remotePilotAddress",
    "configCluster", "istiod", "sds", "sts", "tracer", "certSigners", "waypoint", "nativeNftables",
    "resourceScope", "platform", "ipFamilies", "ipFamilyPolicy", "trustBundleName", "autoscalingv2API",
    "revision", "arch", "meshConfig", "podDNSSearchNamespaces", "networkPolicy", "enableCNI"})

_SEGMENT = re.compile(r"^([A-Za-z0-9_\-]+)(?:\[([^\]]*)\])?$")


def _profile_doc(name: str) -> Spec:
    if name not in PROFILES:
        raise InstallError(f"profile {name!r}: unknown; want one of {', '.join(PROFILES)}")
    text = resources.files("mizzen.kube.install").joinpath("profiles", f"{name}.yaml").read_text()
    spec = (yaml.safe_load(text) or {}).get("spec") or {}
    assert isinstance(spec, dict)
    return spec


def _gateway_key(item: Any) -> Any:
    return item.get("name") if isinstance(item, dict) else None


def merge(base: Any, overlay: Any) -> Any:
    """``overlay`` on ``base``: mappings key by key, gateway lists by ``name``, everything else replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for k, v in overlay.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (isinstance(base, list) and isinstance(overlay, list) and overlay
            and all(_gateway_key(i) for i in [*base, *overlay])):
        merged = [copy.deepcopy(i) for i in base]
        for item in overlay:
            at = next((n for n, b in enumerate(merged) if _gateway_key(b) == _gateway_key(item)), None)
            if at is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[at] = merge(merged[at], item)
        return merged
    return copy.deepcopy(overlay)


def _scalar(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    return text


def apply_set(spec: Spec, assignment: str) -> Spec:
    """``spec`` with one ``--set path=value`` applied (Istio's paths, relative to ``spec``)."""
    path, eq, raw = assignment.partition("=")
    if not eq or not path.strip():
        raise InstallError(f"--set {assignment!r}: want PATH=VALUE")
    path = path.strip()
    if path.startswith("spec."):
        path = path[len("spec."):]
    out = copy.deepcopy(spec)
    node: Any = out
    parts = path.split(".")
    for n, part in enumerate(parts):
        m = _SEGMENT.match(part)
        if m is None:
            raise InstallError(f"--set {path}: {part!r} is not a field name (or name[index])")
        key, index = m.group(1), m.group(2)
        last = n == len(parts) - 1
        if not isinstance(node, dict):
            raise InstallError(f"--set {path}: {'.'.join(parts[:n])} is not a mapping")
        if index is None:
            if last:
                node[key] = _scalar(raw)
            else:
                node = node.setdefault(key, {})
            continue
        items = node.setdefault(key, [])
        if not isinstance(items, list):
            raise InstallError(f"--set {path}: {key} is not a list")
        if ":" in index:   # [name:value] selects by a field's value
            field_name, _, want = index.partition(":")
            at = next((i for i, it in enumerate(items) if isinstance(it, dict)
                       and str(it.get(field_name)) == want), None)
            if at is None:
                items.append({field_name: want})
                at = len(items) - 1
        else:
            if not index.isdigit():
                raise InstallError(f"--set {path}: [{index}] is not an index or [field:value]")
            at = int(index)
            if at > len(items):
                raise InstallError(f"--set {path}: {key} has {len(items)} items; [{at}] is past its end")
            if at == len(items):
                items.append({})
        if last:
            items[at] = _scalar(raw)
        else:
            if not isinstance(items[at], dict):
                items[at] = {}
            node = items[at]
    return out


def _unknown(where: str, doc: Any, allowed: frozenset[str]) -> None:
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise InstallError(f"{where}: expected a mapping, got {type(doc).__name__}")
    for k in doc:
        if k not in allowed:
            raise InstallError(f"{where}.{k}: unknown field")


def _check_k8s(where: str, k8s: Any) -> None:
    _unknown(where, k8s, K8S_FIELDS)
    if not k8s:
        return
    for key in ("replicaCount",):
        if key in k8s and (not isinstance(k8s[key], int) or isinstance(k8s[key], bool) or k8s[key] < 0):
            raise InstallError(f"{where}.{key}: {k8s[key]!r} is not a count")
    hpa = k8s.get("hpaSpec")
    if hpa is not None:
        _unknown(f"{where}.hpaSpec", hpa, frozenset({"minReplicas", "maxReplicas", "metrics", "behavior",
                                                      "scaleTargetRef"}))
    svc = k8s.get("service")
    if svc is not None:
        _unknown(f"{where}.service", svc, frozenset({
            "type", "ports", "selector", "clusterIP", "externalIPs", "loadBalancerIP",
            "loadBalancerSourceRanges",
            "externalName", "externalTrafficPolicy", "healthCheckNodePort", "publishNotReadyAddresses",
            "sessionAffinity", "sessionAffinityConfig", "ipFamilies", "ipFamilyPolicy",
            "internalTrafficPolicy", "allocateLoadBalancerNodePorts", "loadBalancerClass"}))
        for i, p in enumerate(svc.get("ports") or []):
            _unknown(f"{where}.service.ports[{i}]", p, frozenset({"name", "port", "targetPort", "nodePort",
                                                                  "protocol", "appProtocol"}))
            if not isinstance(p.get("port"), int):
                raise InstallError(f"{where}.service.ports[{i}].port: want a port number")


def check(spec: Spec) -> None:
    """Raise :class:`InstallError` (the field's path) for a field IstioOperator does not have."""
    _unknown("spec", spec, SPEC_FIELDS)
    comps = spec.get("components") or {}
    _unknown("spec.components", comps, COMPONENTS | GATEWAY_COMPONENTS)
    for name in COMPONENTS:
        c = comps.get(name)
        _unknown(f"spec.components.{name}", c, COMPONENT_FIELDS)
        if c:
            _check_k8s(f"spec.components.{name}.k8s", c.get("k8s"))
            if "enabled" in c and not isinstance(c["enabled"], bool):
                raise InstallError(f"spec.components.{name}.enabled: want true or false")
    for kind in GATEWAY_COMPONENTS:
        gws = comps.get(kind)
        if gws is None:
            continue
        if not isinstance(gws, list):
            raise InstallError(f"spec.components.{kind}: expected a list")
        for i, g in enumerate(gws):
            where = f"spec.components.{kind}[{i}]"
            _unknown(where, g, GATEWAY_FIELDS)
            if not g.get("name"):
                raise InstallError(f"{where}.name: required")
            if "enabled" in g and not isinstance(g["enabled"], bool):
                raise InstallError(f"{where}.enabled: want true or false")
            _check_k8s(f"{where}.k8s", g.get("k8s"))
    mesh = spec.get("meshConfig")
    _unknown("spec.meshConfig", mesh, MESH_FIELDS)
    if mesh:
        try:
            parse_mesh_config(yaml.safe_dump(mesh), MeshConfig())
        except MeshConfigError as e:
            raise InstallError(f"spec.meshConfig: {e}") from None
    values = spec.get("values")
    _unknown("spec.values", values, VALUES_FIELDS)
    if values:
        _unknown("spec.values.global", values.get("global"), GLOBAL_FIELDS)
    for key in ("hub", "tag", "namespace", "revision", "profile"):
        if key in spec and not isinstance(spec[key], str | int | float):
            raise InstallError(f"spec.{key}: want a string")


def _read_operator(path: Path) -> Spec:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except OSError as e:
        raise InstallError(f"{path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise InstallError(f"{path}{line}: not YAML: {getattr(e, 'problem', None) or e}") from None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise InstallError(f"{path}: want one IstioOperator document")
    doc = docs[0]
    api_version = str(doc.get("apiVersion", ""))
    if doc.get("kind") != "IstioOperator" or not api_version.startswith("install.istio.io/"):
        raise InstallError(f"{path}: want kind IstioOperator (apiVersion install.istio.io/v1alpha1), got "
                           f"{doc.get('kind')!r}")
    for k in doc:
        if k not in ("apiVersion", "kind", "metadata", "spec"):
            raise InstallError(f"{path}: {k}: unknown field")
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise InstallError(f"{path}: spec: expected a mapping")
    try:
        check(spec)
    except InstallError as e:
        raise InstallError(f"{path}: {e}") from None
    return spec


def load_spec(files: list[Path] | None = None, sets: list[str] | None = None) -> Spec:
    """The merged, checked IstioOperator ``spec``: default profile < selected profile < files < sets (a
    ``--set`` list index counts in the merged list, e.g. the profile's ``ingressGateways[0]``)."""
    user: Spec = {}
    for p in files or []:
        user = merge(user, _read_operator(p))
    profile = str(user.get("profile") or "default")
    for s in sets or []:
        path, _, value = s.partition("=")
        if path.strip() in ("profile", "spec.profile"):
            profile = value.strip()
    spec = _profile_doc("default")
    if profile != "default":
        spec = merge(spec, _profile_doc(profile))
    spec = merge(spec, user)
    for s in sets or []:
        spec = apply_set(spec, s)
    try:
        check(spec)
    except InstallError as e:
        raise InstallError(f"--set: {e}") from None
    spec["profile"] = profile
    return spec
