"""Mesh-wide settings (the subset of Istio's MeshConfig that Mizzen honours), with Istio's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class OutboundPolicy(str, Enum):
    ALLOW_ANY = "ALLOW_ANY"
    REGISTRY_ONLY = "REGISTRY_ONLY"


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
    enable_auto_mtls: bool = False   # becomes True with the CA/SDS issue
    access_log_file: str = ""        # "" = no access log; "/dev/stdout" like meshConfig.accessLogFile
    access_log_encoding: str = "TEXT"
    # Mizzen's own (local mode): a Gateway server may bind an address outside loopback (0.0.0.0, a LAN IP)
    # only when this is set; see mizzen.controlplane.exposure
    allow_external_bind: bool = False
