"""The local runner: Kubernetes-shaped Deployments as local processes, one loopback pod IP and one app host
per replica, each with an Envoy sidecar (``mizzen.agent``), registered with the control plane when ready.
See docs/LOCAL_MODEL.md for the networking model.
"""

from mizzen.runner.addresses import AddressPool, PodAddresses
from mizzen.runner.gateway import GATEWAY_LABELS, gateway_ports, start_gateway
from mizzen.runner.manifests import (
    DeploymentSpec,
    ManifestError,
    expand,
    load_manifests,
    parse_deployment,
    parse_service,
)
from mizzen.runner.pod import ContainerStatus, PodStatus
from mizzen.runner.process import Backoff
from mizzen.runner.registrar import HttpRegistrar, InProcessRegistrar, WorkloadRegistrar
from mizzen.runner.runner import LocalRunner
from mizzen.runner.sidecar import AgentSidecars, Sidecar, SidecarFactory, SidecarRequest

__all__ = [
    "GATEWAY_LABELS",
    "AddressPool",
    "AgentSidecars",
    "Backoff",
    "ContainerStatus",
    "DeploymentSpec",
    "HttpRegistrar",
    "InProcessRegistrar",
    "LocalRunner",
    "ManifestError",
    "PodAddresses",
    "PodStatus",
    "Sidecar",
    "SidecarFactory",
    "SidecarRequest",
    "WorkloadRegistrar",
    "expand",
    "gateway_ports",
    "load_manifests",
    "parse_deployment",
    "parse_service",
    "start_gateway",
]
