"""Unix-domain-socket workload addresses (valid Istio: ``unix:///path``, ``unix://@abstract``) are left out
of a service's endpoints: Envoy rejects them as socket addresses, which would fail the whole EDS update;
validation warns that they are not honoured yet."""

from __future__ import annotations

import yaml

from mizzen.config.model import Config, ConfigSnapshot
from mizzen.registry.registry import Registry

SE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: uds, namespace: shop}
spec:
  hosts: [uds.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - address: unix:///var/run/app.sock
  - address: 10.0.0.5
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: selected, namespace: shop}
spec:
  hosts: [sel.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: sel}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: on-socket, namespace: shop}
spec: {address: "unix://@abstract", labels: {app: sel}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: on-ip, namespace: shop}
spec: {address: 10.0.0.6, labels: {app: sel}}
"""


def test_registry_unix_socket_addresses_are_left_out_of_endpoints() -> None:
    cfgs = [Config(kind=d["kind"], api_version=d["apiVersion"], name=d["metadata"]["name"],
                   namespace=d["metadata"]["namespace"], spec=d["spec"]) for d in yaml.safe_load_all(SE)]
    reg = Registry()
    reg.set_configs(ConfigSnapshot.of(cfgs))
    snap = reg.snapshot()
    assert [e.address for e in snap.endpoints_for("uds.example.com", 80)] == ["10.0.0.5"]
    assert [e.address for e in snap.endpoints_for("sel.example.com", 80)] == ["10.0.0.6"]
