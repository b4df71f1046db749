"""Istio's sidecar injection template (``istio-discovery/files/injection-template.yaml``, the non-CNI,
non-native-sidecar path Istio installs by default) rendered as data: the labels and annotations it adds, the
``istio-init`` init container (``istio-iptables`` with Istio's flags, NET_ADMIN/NET_RAW, uid 0), the
``istio-proxy`` container (``proxy sidecar`` with Istio's args, env, ports, probes, security context and
mounts) and the volumes. The images are Istio's ``proxyv2`` (``<hub>/proxyv2:<tag>``): its entrypoint is
pilot-agent, which Mizzen's node agent runs as ``python -m mizzen.agent`` (see
:mod:`mizzen.agent.pilot`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mizzen.kube.inject.values import InjectConfig

__all__ = ["INIT_NAME", "PROXY_NAME", "PROXY_UID", "SidecarParts", "WorkloadMeta", "render"]

PROXY_NAME = "istio-proxy"
INIT_NAME = "istio-init"
PROXY_UID = 1337
HEALTH_PORT = 15021          # Envoy's health listener (/healthz/ready)
STATS_PORT = 15090           # Envoy's Prometheus listener

Object = dict[str, Any]


@dataclass(frozen=True)
class WorkloadMeta:
    """Istio's DeploymentMeta + TypeMeta: the workload a pod belongs to (ISTIO_META_WORKLOAD_NAME/OWNER)."""

    name: str
    namespace: str
    api_version: str = ""
    kind: str = ""


@dataclass
class SidecarParts:
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    init_containers: list[Object] = field(default_factory=list)
    containers: list[Object] = field(default_factory=list)
    volumes: list[Object] = field(default_factory=list)
    hold: bool = False
    proxy_config: Object = field(default_factory=dict)


def _ann(annotations: Mapping[str, str], key: str, default: Any) -> str:
    """The template's ``annotation .ObjectMeta key default``."""
    v = annotations.get(key)
    if v is None:
        if isinstance(default, bool):
            return "true" if default else "false"
        return "" if default is None else f"{default}"
    return str(v)


def exclude_inbound_ports(status_port: str, exclude: str) -> str:
    """Istio's ``excludeInboundPort``: the status port added to the excluded inbound ports."""
    ports = [p.strip() for p in exclude.split(",") if p.strip()]
    if status_port and status_port != "0" and status_port not in ports:
        ports.append(status_port)
    return ",".join(ports)


def _resources(annotations: Mapping[str, str], cfg: InjectConfig) -> Object:
    req = {k: annotations[a] for k, a in (("cpu", "sidecar.istio.io/proxyCPU"),
                                           ("memory", "sidecar.istio.io/proxyMemory")) if a in annotations}
    lim = {k: annotations[a] for k, a in (("cpu", "sidecar.istio.io/proxyCPULimit"),
                                           ("memory", "sidecar.istio.io/proxyMemoryLimit"))
           if a in annotations}
    if req or lim:
        return {**({"requests": req} if req else {}), **({"limits": lim} if lim else {})}
    res = cfg.values.get("global.proxy.resources") or {}
    return {k: {rk: rv for rk, rv in v.items() if rv is not None}
            for k, v in res.items() if isinstance(v, Mapping)}


def _trunc_trim(s: str) -> str:
    return s[:63].strip("-_.")


def _pod_ports_json(containers: list[Object]) -> str:
    items = []
    for c in containers:
        for p in c.get("ports") or []:
            d = {k: p[k] for k in ("name", "hostPort", "containerPort", "protocol", "hostIP") if p.get(k)}
            if d:
                items.append(json.dumps(d, separators=(",", ":")))
    return "[\n" + ",".join(items) + "\n]" if items else "[\n]"


def render(pod: Object, cfg: InjectConfig, workload: WorkloadMeta) -> SidecarParts:
    """What the template adds to ``pod`` (which is not changed)."""
    from mizzen.kube.inject.values import proxy_config

    v = cfg.values
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    pc = proxy_config(cfg, annotations)
    parts = SidecarParts(proxy_config=pc)
    app_containers = [c.get("name", "") for c in spec.get("containers") or [] if c.get("name") != PROXY_NAME]

    # -- metadata
    parts.labels["security.istio.io/tlsMode"] = labels.get("security.istio.io/tlsMode") or "istio"
    parts.labels["service.istio.io/canonical-name"] = _trunc_trim(
        labels.get("service.istio.io/canonical-name") or labels.get("app.kubernetes.io/name")
        or labels.get("app") or workload.name)
    parts.labels["service.istio.io/canonical-revision"] = (
        labels.get("service.istio.io/canonical-revision") or labels.get("app.kubernetes.io/version")
        or labels.get("version") or "latest")
    parts.annotations["istio.io/rev"] = cfg.revision
    if app_containers:
        for key in ("kubectl.kubernetes.io/default-logs-container",
                    "kubectl.kubernetes.io/default-container"):
            if key not in annotations:
                parts.annotations[key] = app_containers[0]

    interception = _ann(annotations, "sidecar.istio.io/interceptionMode",
                        pc.get("interceptionMode", "REDIRECT"))
    status_port = _ann(annotations, "status.sidecar.istio.io/port", v.get("global.proxy.statusPort"))
    excluded_in = exclude_inbound_ports(
        status_port, _ann(annotations, "traffic.sidecar.istio.io/excludeInboundPorts",
                          v.get("global.proxy.excludeInboundPorts")))
    hold = bool(pc.get("holdApplicationUntilProxyStarts")) or bool(
        v.get("global.proxy.holdApplicationUntilProxyStarts"))
    parts.hold = hold
    log_level = _ann(annotations, "sidecar.istio.io/agentLogLevel", v.get("global.logging.level"))
    proxy_metadata: Mapping[str, Any] = pc.get("proxyMetadata") or {}
    resources = _resources(annotations, cfg)

    # -- istio-init
    if interception != "NONE":
        image = _ann(annotations, "sidecar.istio.io/proxyImage", v.get("global.proxy_init.image"))
        args = ["istio-iptables", "-p", str(cfg.mesh.get("proxyListenPort") or "15001"),
                "-z", str(cfg.mesh.get("proxyInboundListenPort") or "15006"), "-u", str(PROXY_UID),
                "-m", interception,
                "-i", _ann(annotations, "traffic.sidecar.istio.io/includeOutboundIPRanges",
                           v.get("global.proxy.includeIPRanges")),
                "-x", _ann(annotations, "traffic.sidecar.istio.io/excludeOutboundIPRanges",
                           v.get("global.proxy.excludeIPRanges")),
                "-b", _ann(annotations, "traffic.sidecar.istio.io/includeInboundPorts",
                           v.get("global.proxy.includeInboundPorts")),
                "-d", f"15090,15021,{excluded_in}" if excluded_in else "15090,15021"]
        for flag, key, value_key in (
                ("-q", "traffic.sidecar.istio.io/includeOutboundPorts", "global.proxy.includeOutboundPorts"),
                ("-o", "traffic.sidecar.istio.io/excludeOutboundPorts", "global.proxy.excludeOutboundPorts")):
            if key in annotations or v.text(value_key):
                args += [flag, _ann(annotations, key, v.get(value_key))]
        for key in ("istio.io/reroute-virtual-interfaces", "traffic.sidecar.istio.io/kubevirtInterfaces"):
            if key in annotations:
                args += ["-k", annotations[key]]
                break
        if "traffic.sidecar.istio.io/excludeInterfaces" in annotations:
            args += ["-c", annotations["traffic.sidecar.istio.io/excludeInterfaces"]]
        args.append(f"--log_output_level={log_level}")
        if v.get("global.logAsJson"):
            args.append("--log_as_json")
        init: Object = {"name": INIT_NAME,
                        "image": image if "/" in image else v.image("global.proxy_init.image"), "args": args}
        if v.text("global.imagePullPolicy"):
            init["imagePullPolicy"] = v.text("global.imagePullPolicy")
        if proxy_metadata:
            init["env"] = [{"name": k, "value": str(val)} for k, val in proxy_metadata.items()]
        privileged = bool(v.get("global.proxy.privileged"))
        init["resources"] = copy.deepcopy(resources)
        init["securityContext"] = {
            "allowPrivilegeEscalation": privileged, "privileged": privileged,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": False, "runAsGroup": 0, "runAsNonRoot": False, "runAsUser": 0}
        parts.init_containers.append(init)

    # -- istio-proxy
    domain = v.text("global.proxy.clusterDomain") or "cluster.local"
    image = _ann(annotations, "sidecar.istio.io/proxyImage", v.get("global.proxy.image"))
    proxy: Object = {
        "name": PROXY_NAME,
        "image": image if "/" in image else v.image("global.proxy.image"),
        "ports": [{"containerPort": STATS_PORT, "protocol": "TCP", "name": "http-envoy-prom"}],
        "args": ["proxy", "sidecar", "--domain", f"$(POD_NAMESPACE).svc.{domain}",
                 "--proxyLogLevel=" + _ann(annotations, "sidecar.istio.io/logLevel",
                                           v.get("global.proxy.logLevel")),
                 "--proxyComponentLogLevel=" + _ann(annotations, "sidecar.istio.io/componentLogLevel",
                                                    v.get("global.proxy.componentLogLevel")),
                 f"--log_output_level={log_level}"],
    }
    if int(v.get("global.sts.servicePort") or 0):
        proxy["args"].append(f"--stsPort={v.get('global.sts.servicePort')}")
    if v.get("global.logAsJson"):
        proxy["args"].append("--log_as_json")
    if v.get("global.proxy.lifecycle"):
        proxy["lifecycle"] = v.get("global.proxy.lifecycle")
    elif hold:
        proxy["lifecycle"] = {"postStart": {"exec": {"command": ["pilot-agent", "wait"]}}}
    ca_addr = v.text("global.caAddress") or (
        f"istiod{'-' + v.text('revision') if v.text('revision') else ''}."
        f"{v.text('global.istioNamespace')}.svc:15012")

    def field_ref(path: str) -> Object:
        return {"valueFrom": {"fieldRef": {"fieldPath": path}}}

    def resource_ref(res: str) -> Object:
        return {"valueFrom": {"resourceFieldRef": {"resource": res, "divisor": "1"}}}

    env: list[Object] = [
        {"name": "PILOT_CERT_PROVIDER", "value": v.text("global.pilotCertProvider")},
        {"name": "CA_ADDR", "value": ca_addr},
        {"name": "POD_NAME", **field_ref("metadata.name")},
        {"name": "POD_NAMESPACE", **field_ref("metadata.namespace")},
        {"name": "INSTANCE_IP", **field_ref("status.podIP")},
        {"name": "SERVICE_ACCOUNT", **field_ref("spec.serviceAccountName")},
        {"name": "HOST_IP", **field_ref("status.hostIP")},
        {"name": "ISTIO_CPU_LIMIT", **resource_ref("limits.cpu")},
        {"name": "PROXY_CONFIG", "value": json.dumps(pc, separators=(",", ":"), sort_keys=True)},
        {"name": "ISTIO_META_POD_PORTS", "value": _pod_ports_json(spec.get("containers") or [])},
        {"name": "ISTIO_META_APP_CONTAINERS", "value": ",".join(app_containers)},
        {"name": "GOMEMLIMIT", **resource_ref("limits.memory")},
        {"name": "ISTIO_META_CLUSTER_ID", "value": v.text("global.multiCluster.clusterName") or "Kubernetes"},
        {"name": "ISTIO_META_NODE_NAME", **field_ref("spec.nodeName")},
        {"name": "ISTIO_META_INTERCEPTION_MODE",
         "value": annotations.get("sidecar.istio.io/interceptionMode") or str(pc.get("interceptionMode")
                                                                               or "REDIRECT")},
    ]
    if v.text("global.network"):
        env.append({"name": "ISTIO_META_NETWORK", "value": v.text("global.network")})
    workload_name = labels.get("service.istio.io/workload-name") or workload.name
    if workload_name:
        env.append({"name": "ISTIO_META_WORKLOAD_NAME", "value": workload_name})
    if workload.api_version and workload.name:
        env.append({"name": "ISTIO_META_OWNER",
                    "value": f"kubernetes://apis/{workload.api_version}/namespaces/"
                             f"{workload.namespace or 'default'}/{workload.kind.lower()}s/{workload.name}"})
    mesh_id = v.text("global.meshID") or cfg.trust_domain or "cluster.local"
    env.append({"name": "ISTIO_META_MESH_ID", "value": mesh_id})
    env.append({"name": "TRUST_DOMAIN", "value": cfg.trust_domain or "cluster.local"})
    env += [{"name": k, "value": str(val)} for k, val in proxy_metadata.items()]
    proxy["env"] = env
    if v.text("global.imagePullPolicy"):
        proxy["imagePullPolicy"] = v.text("global.imagePullPolicy")
    if status_port != "0":
        if v.get("global.proxy.startupProbe.enabled"):
            proxy["startupProbe"] = {
                "httpGet": {"path": "/healthz/ready", "port": HEALTH_PORT}, "initialDelaySeconds": 0,
                "periodSeconds": 1, "timeoutSeconds": 3,
                "failureThreshold": int(v.get("global.proxy.startupProbe.failureThreshold") or 600)}
        proxy["readinessProbe"] = {
            "httpGet": {"path": "/healthz/ready", "port": HEALTH_PORT},
            "initialDelaySeconds": int(_ann(
                annotations, "readiness.status.sidecar.istio.io/initialDelaySeconds",
                v.get("global.proxy.readinessInitialDelaySeconds"))),
            "periodSeconds": int(_ann(annotations, "readiness.status.sidecar.istio.io/periodSeconds",
                                      v.get("global.proxy.readinessPeriodSeconds"))),
            "timeoutSeconds": 3,
            "failureThreshold": int(_ann(annotations, "readiness.status.sidecar.istio.io/failureThreshold",
                                         v.get("global.proxy.readinessFailureThreshold")))}
    privileged = bool(v.get("global.proxy.privileged"))
    tproxy = interception == "TPROXY"
    cap_bind = _ann(annotations, "sidecar.istio.io/capNetBindService",
                    v.get("global.proxy.capNetBindService")) == "true"
    sc: Object = {"allowPrivilegeEscalation": privileged, "capabilities": {"drop": ["ALL"]},
                  "privileged": privileged, "readOnlyRootFilesystem": True}
    if tproxy or cap_bind:
        sc["capabilities"]["add"] = [*(["NET_ADMIN"] if tproxy else []),
                                     *(["NET_BIND_SERVICE"] if cap_bind else [])]
        sc.update(runAsNonRoot=False, runAsUser=0, runAsGroup=PROXY_UID)
    else:
        sc.update(runAsNonRoot=True, runAsUser=PROXY_UID, runAsGroup=PROXY_UID)
    proxy["securityContext"] = sc
    proxy["resources"] = resources
    mounts: list[Object] = [
        {"name": "workload-socket", "mountPath": "/var/run/secrets/workload-spiffe-uds"},
        {"name": "credential-socket", "mountPath": "/var/run/secrets/credential-uds"},
        {"name": "workload-certs", "mountPath": "/var/run/secrets/workload-spiffe-credentials"},
    ]
    if v.text("global.pilotCertProvider") == "istiod":
        mounts += [{"mountPath": "/var/run/secrets/istio", "name": "istiod-ca-cert"},
                   {"mountPath": "/var/run/secrets/istio/crl", "name": "istio-ca-crl"}]
    mounts += [{"mountPath": "/var/lib/istio/data", "name": "istio-data"},
               {"mountPath": "/etc/istio/proxy", "name": "istio-envoy"},
               {"mountPath": "/var/run/secrets/tokens", "name": "istio-token"},
               {"name": "istio-podinfo", "mountPath": "/etc/istio/pod"}]
    user_mounts = _json_annotation(annotations, "sidecar.istio.io/userVolumeMount")
    mounts += [{"name": k, **val} for k, val in user_mounts.items()]
    proxy["volumeMounts"] = mounts
    parts.containers.append(proxy)

    # -- volumes
    vols: list[Object] = [
        {"name": "workload-socket", "emptyDir": {}},
        {"name": "credential-socket", "emptyDir": {}},
        {"name": "workload-certs", "emptyDir": {}},
        {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
        {"name": "istio-data", "emptyDir": {}},
        {"name": "istio-podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}},
        {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
            "path": "istio-token", "expirationSeconds": 43200,
            "audience": v.text("global.sds.token.aud")}}]}},
    ]
    if v.text("global.pilotCertProvider") == "istiod":
        vols.append({"name": "istiod-ca-cert",
                     "configMap": {"name": v.text("global.trustBundleName") or "istio-ca-root-cert"}})
    vols.append({"name": "istio-ca-crl", "configMap": {"name": "istio-ca-crl", "optional": True}})
    user_vols = _json_annotation(annotations, "sidecar.istio.io/userVolume")
    vols += [{"name": k, **val} for k, val in user_vols.items()]
    parts.volumes = vols
    return parts


def _json_annotation(annotations: Mapping[str, str], key: str) -> dict[str, Object]:
    from mizzen.kube.inject.values import ValuesError

    if key not in annotations:
        return {}
    try:
        doc = json.loads(annotations[key])
    except json.JSONDecodeError as e:
        raise ValuesError(f"annotation {key}: not JSON: {e.msg}") from None
    if not isinstance(doc, dict) or not all(isinstance(x, dict) for x in doc.values()):
        raise ValuesError(f"annotation {key}: want a JSON object of name -> volume")
    return doc

