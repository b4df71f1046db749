"""The gRPC xDS bootstrap (``GRPC_XDS_BOOTSTRAP``) for a proxyless gRPC application, as Istio's agent
writes it.

The application's xDS client talks to the local agent's xDS proxy socket (``server_uri: unix:///…``), not to
the control plane, and announces itself with the same node id and metadata a sidecar would, plus
``GENERATOR: grpc`` so the control plane generates the proxyless form (``core.grpcgen``).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from mizzen.agent.bootstrap import ProxySpec, node_metadata
from mizzen.core.grpcgen import GENERATOR_GRPC

__all__ = ["GRPC_XDS_BOOTSTRAP_ENV", "grpc_bootstrap", "write_grpc_bootstrap"]

GRPC_XDS_BOOTSTRAP_ENV = "GRPC_XDS_BOOTSTRAP"


def grpc_bootstrap(spec: ProxySpec, server_uri: str) -> dict[str, Any]:
    """The bootstrap document; ``server_uri`` is the agent's xDS socket, e.g. ``unix:///path/XDS``."""
    meta = node_metadata(replace(spec, http_proxy_port=0))
    meta["GENERATOR"] = GENERATOR_GRPC
    node: dict[str, Any] = {"id": spec.node_id, "cluster": spec.cluster, "metadata": meta}
    if spec.locality:
        node["locality"] = dict(zip(("region", "zone", "sub_zone"), [*spec.locality.split("/"), "", ""][:3],
                                    strict=True))
    return {
        "xds_servers": [{
            "server_uri": server_uri,
            "channel_creds": [{"type": "insecure"}],   # a local socket: the agent holds the mesh credentials
            "server_features": ["xds_v3"],
        }],
        "node": node,
    }


def write_grpc_bootstrap(path: Path, spec: ProxySpec, server_uri: str) -> Path:
    """Write the bootstrap atomically (0644: it holds no secret); point ``GRPC_XDS_BOOTSTRAP`` at it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(grpc_bootstrap(spec, server_uri), indent=1, sort_keys=True))
    os.chmod(tmp, 0o644)
    tmp.replace(path)
    return path
