"""Istio's workload identity labels, as telemetry reports them: workload name (the Deployment, not the pod),
app, version, canonical service and revision, cluster; ``unknown`` where Istio reports ``unknown``.

One place for the rules (Istio's ``pkg/config/labels`` canonical names and the stats plugin's peer
fields), so endpoint metadata (EDS, what a client proxy reports about its destination) and listener-level
constants (what a proxy reports about itself) agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["CLUSTER_ID", "PEER_FIELDS", "PEER_KEY", "PEER_METADATA", "SERVICE_KEY", "UNKNOWN", "PeerLabels",
           "canonical_revision", "canonical_service", "decode_peer", "encode_peer",
           "encode_service", "escape", "peer_labels", "unescape", "workload_from_pod"]

CLUSTER_ID = "Kubernetes"     # Istio's default cluster ID (source_cluster / destination_cluster)
UNKNOWN = "unknown"
# the metadata namespace of peer labels: endpoint metadata (EDS); also the filter state key in which a
# receiving proxy keeps the peer's header (mizzen.telemetry.exchange)
PEER_METADATA = "mizzen.peer"
# the key holding all peer fields in one string (encode_peer, as the peer header carries them): endpoint
# metadata, read with one command operator per stat
PEER_KEY = "peer"
# the cluster metadata key holding a service's host, name and namespace in one string (encode_service): one
# command operator per HTTP stat instead of three
SERVICE_KEY = "svc"

# a ReplicaSet pod's name: <deployment>-<pod-template-hash (6-10)>-<5 random>
_RS_POD = re.compile(r"^(?P<deploy>.+)-[a-z0-9]{6,10}-[a-z0-9]{5}$")


def workload_from_pod(pod: str) -> str:
    """The workload (Deployment) name of a pod named the way a ReplicaSet names it, else the pod name."""
    m = _RS_POD.match(pod)
    return m.group("deploy") if m else pod


def canonical_service(labels: Mapping[str, str], workload: str) -> str:
    return (labels.get("service.istio.io/canonical-name") or labels.get("app.kubernetes.io/name")
            or labels.get("app") or workload)


def canonical_revision(labels: Mapping[str, str]) -> str:
    return (labels.get("service.istio.io/canonical-revision") or labels.get("app.kubernetes.io/version")
            or labels.get("version") or "latest")


@dataclass(frozen=True)
class PeerLabels:
    """What a proxy says about one side of a request (``source_*`` or ``destination_*`` labels)."""

    workload: str
    namespace: str
    app: str
    version: str
    canonical_service: str
    canonical_revision: str
    cluster: str = CLUSTER_ID

    def fields(self) -> dict[str, str]:
        """Istio's label suffixes (``workload``, ``workload_namespace``, ...) -> value."""
        return {
            "workload": self.workload,
            "workload_namespace": self.namespace,
            "app": self.app,
            "version": self.version,
            "canonical_service": self.canonical_service,
            "canonical_revision": self.canonical_revision,
            "cluster": self.cluster,
        }


PEER_FIELDS: tuple[str, ...] = ("workload", "workload_namespace", "app", "version", "canonical_service",
                                "canonical_revision", "cluster")


def peer_labels(pod: str, namespace: str, labels: Mapping[str, str]) -> PeerLabels:
    workload = workload_from_pod(pod) if pod else UNKNOWN
    return PeerLabels(
        workload=workload,
        namespace=namespace or UNKNOWN,
        app=labels.get("app") or UNKNOWN,
        version=labels.get("version") or UNKNOWN,
        canonical_service=canonical_service(labels, workload),
        canonical_revision=canonical_revision(labels),
    )


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_ESCAPED = re.compile(r"(~[0-9A-F]{2})")


def escape(value: str) -> str:
    """``value`` with every character but ``[A-Za-z0-9._-]`` as ``~HH`` (its UTF-8 bytes): safe in a header,
    a list joined by ``,`` / ``|`` / ``;`` / ``=`` and an Envoy format string (no ``%``)."""
    return _UNSAFE.sub(lambda m: "".join(f"~{b:02X}" for b in m[0].encode()), value)


def unescape(value: str) -> str:
    if "~" not in value:
        return value
    parts = _ESCAPED.split(value)        # odd indexes: the ~HH escapes
    raw = b"".join(bytes([int(p[1:], 16)]) if i % 2 else p.encode() for i, p in enumerate(parts))
    return raw.decode("utf-8", "replace")


def encode_peer(fields: Mapping[str, str]) -> str:
    """All peer fields in one short string: their values in :data:`PEER_FIELDS` order, escaped, joined by
    ``,`` (a field not given is empty): the peer header (``mizzen.telemetry.exchange``) and the endpoint
    metadata key :data:`PEER_KEY`."""
    return ",".join(escape(fields.get(f, "")) for f in PEER_FIELDS)


def encode_service(host: str, name: str, namespace: str) -> str:
    """A service's ``destination_service``, ``destination_service_name`` and ``destination_service_namespace``
    in one short string: escaped, joined by ``,`` (cluster metadata key :data:`SERVICE_KEY`)."""
    return ",".join(escape(v) for v in (host, name, namespace))


def decode_peer(value: str) -> dict[str, str]:
    """The fields :func:`encode_peer` packed; ValueError when ``value`` is not such a string."""
    values = value.split(",")
    if len(values) != len(PEER_FIELDS):
        raise ValueError(f"{len(PEER_FIELDS)} peer fields expected, got {len(values)}")
    return {f: unescape(v) for f, v in zip(PEER_FIELDS, values, strict=True)}
