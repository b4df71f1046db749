"""Mesh-wide settings (the subset of Istio's MeshConfig that Mizzen honours), with Istio's defaults."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any


class OutboundPolicy(str, Enum):
    ALLOW_ANY = "ALLOW_ANY"
    REGISTRY_ONLY = "REGISTRY_ONLY"


@dataclass(frozen=True)
class ExtensionProvider:
    """One of MeshConfig's ``extensionProviders`` (only the ext_authz kinds: ``envoyExtAuthzHttp`` and
    ``envoyExtAuthzGrpc``); ``settings`` is the provider's body as Istio's mesh config spells it (service,
    port, timeout, pathPrefix, failOpen, statusOnError, includeRequestHeadersInCheck, ...), kept as sorted
    (key, value) pairs so the mesh config stays hashable."""

    name: str
    kind: str                              # "envoyExtAuthzHttp" | "envoyExtAuthzGrpc"
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def body(self) -> dict[str, Any]:
        return dict(self.settings)


def extension_providers(raw: Sequence[Mapping[str, Any]]) -> tuple[ExtensionProvider, ...]:
    """Istio's ``extensionProviders`` list (``[{name: x, envoyExtAuthzHttp: {...}}]``) -> providers; kinds
    other than ext_authz are skipped. Raises ValueError with a one-line reason for a malformed entry."""
    out = []
    for i, p in enumerate(raw):
        name = p.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"extensionProviders[{i}]: name is required")
        for kind in ("envoyExtAuthzHttp", "envoyExtAuthzGrpc"):
            body = p.get(kind)
            if isinstance(body, Mapping):
                if not body.get("service") or not isinstance(body.get("port"), int):
                    raise ValueError(f"extensionProviders[{i}] {name}: {kind} needs service and port")
                out.append(ExtensionProvider(name, kind, tuple(sorted(
                    (str(k), _freeze(v)) for k, v in body.items()))))
    return tuple(out)


def _freeze(v: Any) -> Any:
    if isinstance(v, Mapping):
        return tuple(sorted((str(k), _freeze(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


@dataclass(frozen=True)
class MeshConfig:
    root_namespace: str = "istio-system"
    domain_suffix: str = "cluster.local"
    trust_domain: str = "cluster.local"
    outbound_policy: OutboundPolicy = OutboundPolicy.ALLOW_ANY
    connect_timeout_s: float = 10.0
    # Istio's default retry policy for HTTP routes with no explicit retries
    default_retry_attempts: int = 2
    default_retry_on: str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    enable_auto_mtls: bool = True    # Istio's default (meshConfig.enableAutoMtls); needs the proxy's SDS
    access_log_file: str = ""        # "" = no access log; "/dev/stdout" like meshConfig.accessLogFile
    access_log_encoding: str = "TEXT"
    access_log_format: str = ""      # meshConfig.accessLogFormat; "" = Istio's default for the encoding
    # Mizzen's own (local mode): a Gateway server may bind an address outside loopback (0.0.0.0, a LAN IP)
    # only when this is set; see mizzen.controlplane.exposure
    allow_external_bind: bool = False
    # MeshConfig.extensionProviders (ext_authz providers for CUSTOM AuthorizationPolicies)
    extension_providers: tuple[ExtensionProvider, ...] = ()
    # defaultConfig.tracing: the Zipkin collector (``host:port``; "" = no tracing, Istio's default would be
    # zipkin.istio-system:9411) and the percentage of requests sampled (Istio's default 1.0)
    tracing_zipkin_address: str = ""
    tracing_sampling: float = 1.0


def with_mesh_file(mesh: MeshConfig, doc: Any) -> MeshConfig:
    """``mesh`` with the fields of an Istio mesh config document that Mizzen honours: ``extensionProviders``
    (ext_authz kinds), ``rootNamespace``, ``trustDomain``, ``accessLogFile``, ``accessLogEncoding`` (TEXT or
    JSON), ``accessLogFormat``, ``outboundTrafficPolicy.mode``, ``defaultConfig.tracing`` (``sampling``,
    ``zipkin.address``). ``doc`` is the ``mesh`` key of Istio's ConfigMap (YAML already parsed), the ``istio``
    ConfigMap itself (its ``data.mesh``) or an IstioOperator (its ``spec.meshConfig``, like the seed's).
    Raises ValueError with a one-line reason."""
    import dataclasses

    if doc is None:
        return mesh
    if isinstance(doc, Mapping) and doc.get("kind") == "IstioOperator":
        doc = (doc.get("spec") or {}).get("meshConfig") or {}
    elif isinstance(doc, Mapping) and doc.get("kind") == "ConfigMap":
        import yaml

        try:
            doc = yaml.safe_load((doc.get("data") or {}).get("mesh") or "") or {}
        except yaml.YAMLError as e:
            raise ValueError(f"ConfigMap data.mesh is not YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, Mapping):
        raise ValueError("mesh config must be a YAML mapping (Istio's MeshConfig)")
    changes: dict[str, Any] = {}
    providers = doc.get("extensionProviders")
    if providers is not None:
        if not isinstance(providers, list) or not all(isinstance(p, Mapping) for p in providers):
            raise ValueError("extensionProviders must be a list of providers")
        changes["extension_providers"] = extension_providers(providers)
    for key, attr in (("rootNamespace", "root_namespace"), ("trustDomain", "trust_domain"),
                      ("accessLogFile", "access_log_file"), ("accessLogFormat", "access_log_format")):
        if key in doc:
            if not isinstance(doc[key], str):
                raise ValueError(f"{key} must be a string")
            changes[attr] = doc[key]
    changes.update(_tracing(doc.get("defaultConfig")))
    if "accessLogEncoding" in doc:
        encoding = str(doc["accessLogEncoding"]).upper()
        if encoding not in ("TEXT", "JSON"):
            raise ValueError(f"accessLogEncoding: want TEXT or JSON, got {doc['accessLogEncoding']!r}")
        changes["access_log_encoding"] = encoding
    policy = doc.get("outboundTrafficPolicy")
    if policy is not None:
        mode = policy.get("mode") if isinstance(policy, Mapping) else None
        try:
            changes["outbound_policy"] = OutboundPolicy(str(mode or "ALLOW_ANY"))
        except ValueError:
            raise ValueError(f"outboundTrafficPolicy.mode: want ALLOW_ANY or REGISTRY_ONLY, got {mode!r}") \
                from None
    return dataclasses.replace(mesh, **changes)


def _tracing(default_config: Any) -> dict[str, Any]:
    """``defaultConfig.tracing``: ``sampling`` (percent) and ``zipkin.address`` (``host:port``)."""
    if default_config is None:
        return {}
    if not isinstance(default_config, Mapping):
        raise ValueError("defaultConfig must be a mapping (Istio's ProxyConfig)")
    tracing = default_config.get("tracing")
    if tracing is None:
        return {}
    if not isinstance(tracing, Mapping):
        raise ValueError("defaultConfig.tracing must be a mapping")
    out: dict[str, Any] = {}
    if "sampling" in tracing:
        value = tracing["sampling"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise ValueError(f"defaultConfig.tracing.sampling must be a percentage from 0 to 100, "
                             f"not {value!r}")
        out["tracing_sampling"] = float(value)
    if "zipkin" in tracing:
        zipkin = tracing["zipkin"]
        address = zipkin.get("address") if isinstance(zipkin, Mapping) else None
        if not isinstance(address, str) or not address.rpartition(":")[2].isdigit():
            raise ValueError(f"defaultConfig.tracing.zipkin.address must be host:port, not {address!r}")
        out["tracing_zipkin_address"] = address
    return out
