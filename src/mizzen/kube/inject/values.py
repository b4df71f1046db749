"""What the injection template reads besides the pod: the chart's ``values`` (Istio's
``istio-discovery`` values.yaml defaults for the keys the sidecar template uses, overlaid with a values
file, ``istioctl kube-inject --valuesFile``) and the ProxyConfig: Istio's ``mesh.DefaultProxyConfig()``,
then the mesh config's ``defaultConfig``, then the pod's ``proxy.istio.io/config`` annotation (YAML), merged
field by field as istiod does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "DEFAULT_PROXY_CONFIG",
    "DEFAULT_VALUES",
    "InjectConfig",
    "Values",
    "ValuesError",
    "merge",
    "proxy_config",
]

PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"

# istio-discovery's values.yaml, the keys the sidecar template reads (Istio 1.2x defaults)
DEFAULT_VALUES: dict[str, Any] = {
    "revision": "",
    "global": {
        "hub": "docker.io/istio",
        "tag": "mizzen",
        "istioNamespace": "istio-system",
        "imagePullPolicy": "",
        "imagePullSecrets": [],
        "logging": {"level": "default:info"},
        "logAsJson": False,
        "meshID": "",
        "trustDomain": "",
        "network": "",
        "multiCluster": {"clusterName": ""},
        "caAddress": "",
        "pilotCertProvider": "istiod",
        "sds": {"token": {"aud": "istio-ca"}},
        "sts": {"servicePort": 0},
        "proxy": {
            "image": "proxyv2",
            "autoInject": "enabled",
            "clusterDomain": "cluster.local",
            "logLevel": "warning",
            "componentLogLevel": "misc:error",
            "privileged": False,
            "holdApplicationUntilProxyStarts": False,
            "statusPort": 15020,
            "includeIPRanges": "*",
            "excludeIPRanges": "",
            "includeInboundPorts": "*",
            "excludeInboundPorts": "",
            "includeOutboundPorts": "",
            "excludeOutboundPorts": "",
            "readinessInitialDelaySeconds": 0,
            "readinessPeriodSeconds": 15,
            "readinessFailureThreshold": 4,
            "startupProbe": {"enabled": True, "failureThreshold": 600},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"cpu": "2000m", "memory": "1024Mi"}},
            "lifecycle": {},
            "capNetBindService": False,
            "tracer": "none",
        },
        "proxy_init": {"image": "proxyv2"},
    },
    "sidecarInjectorWebhook": {
        "rewriteAppHTTPProbe": True,
        "enableNamespacesByDefault": False,
        "neverInjectSelector": [],
        "alwaysInjectSelector": [],
        "injectedAnnotations": {},
        "defaultTemplates": [],
    },
    "pilot": {"cni": {"enabled": False}},
}

# Istio's mesh.DefaultProxyConfig() (protoToJSON names), what PROXY_CONFIG carries when nothing overrides it
DEFAULT_PROXY_CONFIG: dict[str, Any] = {
    "configPath": "./etc/istio/proxy",
    "binaryPath": "/usr/local/bin/envoy",
    "serviceCluster": "istio-proxy",
    "drainDuration": "45s",
    "terminationDrainDuration": "5s",
    "discoveryAddress": "istiod.istio-system.svc:15012",
    "proxyAdminPort": 15000,
    "controlPlaneAuthPolicy": "MUTUAL_TLS",
    "statNameLength": 189,
    "statusPort": 15020,
    "tracing": {"zipkin": {"address": "zipkin.istio-system:9411"}},
}


class ValuesError(ValueError):
    """A values file, mesh config or ``proxy.istio.io/config`` annotation that cannot be used (one line)."""


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in ``over`` replaces ``base``'s."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _mapping(text: str | None, what: str) -> dict[str, Any]:
    if not text or not text.strip():
        return {}
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValuesError(f"{what}: not YAML{line}: {getattr(e, 'problem', None) or e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValuesError(f"{what}: expected a mapping, got {type(doc).__name__}")
    return doc


@dataclass(frozen=True)
class Values:
    """The chart values (defaults merged with the given ones): ``get("global.proxy.statusPort")``, or
    ``text(...)`` for the template's string form."""

    data: Mapping[str, Any] = field(default_factory=lambda: copy.deepcopy(DEFAULT_VALUES))

    @classmethod
    def parse(cls, text: str | None, what: str = "values") -> Values:
        """A values document: Istio's chart values, or the ``values`` JSON of the ``istio-sidecar-injector``
        ConfigMap (both have ``global`` at the top)."""
        return cls(merge(DEFAULT_VALUES, _mapping(text, what)))

    def get(self, dotted: str, default: Any = None) -> Any:
        cur: Any = self.data
        for part in dotted.split("."):
            if not isinstance(cur, Mapping) or part not in cur:
                return default
            cur = cur[part]
        return cur

    def text(self, dotted: str) -> str:
        v = self.get(dotted, "")
        if isinstance(v, bool):
            return "true" if v else "false"
        return "" if v is None else f"{v}"

    def image(self, key: str) -> str:
        """``global.proxy.image`` / ``global.proxy_init.image``: as is when it names a registry path, else
        ``<hub>/<image>:<tag>`` as Istio's ProxyImage."""
        name = self.text(key)
        if "/" in name:
            return name
        return f"{self.text('global.hub')}/{name}:{self.text('global.tag')}"


@dataclass(frozen=True)
class InjectConfig:
    """Everything besides the pod: chart values, the mesh config (Istio's MeshConfig document as a mapping:
    ``defaultConfig``, ``trustDomain``, ...) and the injector's revision."""

    values: Values = field(default_factory=Values)
    mesh: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, values_text: str | None = None, mesh_text: str | None = None,
              inject_config_text: str | None = None) -> InjectConfig:
        """From istioctl kube-inject's files (each may also be the ConfigMap holding it: ``istio``'s
        ``mesh``, ``istio-sidecar-injector``'s ``values`` and ``config``). The injector config's
        ``policy``, ``alwaysInjectSelector``, ``neverInjectSelector`` and ``injectedAnnotations`` are
        honoured; its ``templates`` are not (Mizzen renders Istio's sidecar template itself)."""
        mesh = _from_configmap(_mapping(mesh_text, "mesh config"), "mesh", "mesh config")
        dc = mesh.get("defaultConfig", {})
        if dc is not None and not isinstance(dc, dict):
            raise ValuesError("mesh config: defaultConfig must be a mapping (Istio's ProxyConfig)")
        values = _from_configmap(_mapping(values_text, "values"), "values", "values")
        inj = _from_configmap(_mapping(inject_config_text, "injector config"), "config", "injector config")
        over: dict[str, Any] = {}
        if "policy" in inj:
            if inj["policy"] not in ("enabled", "disabled"):
                raise ValuesError(f"injector config: policy {inj['policy']!r}: want enabled or disabled")
            over.setdefault("global", {}).setdefault("proxy", {})["autoInject"] = inj["policy"]
        for key in ("alwaysInjectSelector", "neverInjectSelector", "injectedAnnotations"):
            if key in inj:
                over.setdefault("sidecarInjectorWebhook", {})[key] = inj[key]
        return cls(Values(merge(merge(DEFAULT_VALUES, values), over)), mesh)

    @property
    def revision(self) -> str:
        return self.values.text("revision") or "default"

    @property
    def trust_domain(self) -> str:
        return str(self.mesh.get("trustDomain") or self.values.text("global.trustDomain") or "")


def _from_configmap(doc: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    """A ConfigMap's ``data[key]`` (YAML or JSON text) instead of the document itself."""
    if doc.get("kind") != "ConfigMap":
        return doc
    text = (doc.get("data") or {}).get(key)
    if not isinstance(text, str):
        raise ValuesError(f"{what}: the ConfigMap has no data.{key}")
    return _mapping(text, what)


def proxy_config(cfg: InjectConfig, annotations: Mapping[str, str]) -> dict[str, Any]:
    """Istio's defaults, the mesh's ``defaultConfig``, then the pod's ``proxy.istio.io/config``."""
    pc = merge(DEFAULT_PROXY_CONFIG, cfg.mesh.get("defaultConfig") or {})
    return merge(pc, _mapping(annotations.get(PROXY_CONFIG_ANNOTATION), PROXY_CONFIG_ANNOTATION))
