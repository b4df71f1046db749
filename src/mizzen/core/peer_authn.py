"""PeerAuthentication: which mTLS mode each inbound port of a workload gets, with Istio's precedence
(``ComposePeerAuthentication``): the mesh policy (root namespace, no selector), then the namespace policy (no
selector), then the workload policy (a selector matching the workload's labels, in its namespace), then the
workload policy's ``portLevelMtls`` for one port. ``UNSET`` (or no ``mtls``) inherits from the level above;
the mesh default is PERMISSIVE. When several policies compete at one level the oldest wins (then by name).

Also Istio's ``BestEffortInferServiceMTLSMode`` for clients: the mode a service's servers most likely have,
so auto mTLS sends plaintext to a namespace or mesh that DISABLEs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from mizzen.config.labels import selects
from mizzen.config.model import Config
from mizzen.core.push_context import PushContext

__all__ = [
    "KIND",
    "MtlsMode",
    "PeerPolicy",
    "applied",
    "infer_service_mode",
    "peer_policy",
]

KIND = "PeerAuthentication"


class MtlsMode(str, Enum):
    UNSET = "UNSET"
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


@dataclass(frozen=True)
class PeerPolicy:
    """The effective policy of one workload: its mode, and per workload (target) port overrides."""

    mode: MtlsMode = MtlsMode.PERMISSIVE
    ports: Mapping[int, MtlsMode] = field(default_factory=dict)

    def for_port(self, port: int) -> MtlsMode:
        return self.ports.get(port, self.mode)


def _mode(value: object) -> MtlsMode:
    mtls = value if isinstance(value, Mapping) else {}
    try:
        return MtlsMode(str(mtls.get("mode") or "UNSET"))
    except ValueError:
        return MtlsMode.UNSET


def _selector(c: Config) -> Mapping[str, str]:
    sel = c.spec.get("selector")
    labels = sel.get("matchLabels") if isinstance(sel, Mapping) else None
    return labels if isinstance(labels, Mapping) else {}


def _oldest(configs: Sequence[Config]) -> Config | None:
    return min(configs, key=lambda c: (c.created, c.namespace, c.name)) if configs else None


def _level_policies(push: PushContext, namespace: str) -> tuple[Config | None, Config | None]:
    """(mesh policy, namespace policy) for workloads of ``namespace``; memoized per push."""
    def build() -> tuple[Config | None, Config | None]:
        root = push.mesh.root_namespace
        mesh = _oldest([c for c in push.configs.list(KIND, root) if not _selector(c)])
        ns = None if namespace == root else _oldest(
            [c for c in push.configs.list(KIND, namespace) if not _selector(c)])
        return mesh, ns
    return push.memoized(("peer_authn", namespace), build)


def applied(push: PushContext, namespace: str, labels: Mapping[str, str]) -> list[Config]:
    """The policies that make up a workload's effective one: mesh, namespace, workload (those present)."""
    mesh, ns = _level_policies(push, namespace)
    workload = _oldest([c for c in push.configs.list(KIND, namespace)
                        if _selector(c) and selects(_selector(c), labels)])
    return [c for c in (mesh, ns, workload) if c is not None]


def peer_policy(push: PushContext, namespace: str, labels: Mapping[str, str]) -> PeerPolicy:
    """The effective PeerAuthentication of a workload (its namespace and labels)."""
    mesh, ns = _level_policies(push, namespace)
    mode = MtlsMode.PERMISSIVE
    for level in (mesh, ns):
        if level is not None and _mode(level.spec.get("mtls")) is not MtlsMode.UNSET:
            mode = _mode(level.spec.get("mtls"))
    workload = _oldest([c for c in push.configs.list(KIND, namespace)
                        if _selector(c) and selects(_selector(c), labels)])
    if workload is None:
        return PeerPolicy(mode)
    if _mode(workload.spec.get("mtls")) is not MtlsMode.UNSET:
        mode = _mode(workload.spec.get("mtls"))
    ports: dict[int, MtlsMode] = {}
    raw = workload.spec.get("portLevelMtls")
    for key, value in (raw.items() if isinstance(raw, Mapping) else ()):
        if str(key).isdigit():
            port_mode = _mode(value)
            ports[int(str(key))] = mode if port_mode is MtlsMode.UNSET else port_mode
    return PeerPolicy(mode, ports)


def infer_service_mode(push: PushContext, namespace: str) -> MtlsMode | None:
    """Istio's BestEffortInferServiceMTLSMode for a service of ``namespace``: unknown (None) when workload
    policies exist there (they may say anything per pod or port), else the namespace/mesh mode."""
    if any(_selector(c) for c in push.configs.list(KIND, namespace)):
        return None
    return peer_policy(push, namespace, {}).mode
