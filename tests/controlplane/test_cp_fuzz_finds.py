"""Defects the fuzz test found (tests/controlplane/test_cp_fuzz.py), each pinned with real Envoy."""

from __future__ import annotations

from harness import Mesh, mesh  # noqa: F401  (mesh is a fixture)

DNS_AND_STATIC = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: googleapis, namespace: seexamples}
spec:
  hosts: [www.googleapis.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-svc-https, namespace: seexamples}
spec:
  hosts: [api.dropboxapi.com, www.googleapis.com, api.facebook.com]
  location: MESH_EXTERNAL
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: STATIC
"""


async def test_host_name_endpoint_never_reaches_an_eds_cluster(mesh: Mesh) -> None:  # noqa: F811
    """A DNS ServiceEntry's host endpoint used to land in the EDS cluster of a STATIC ServiceEntry for the
    same host in the same namespace: Envoy NACKed the endpoints ("malformed IP address: www.googleapis.com").
    """
    agent = await mesh.sidecar("bookinfo", "client", {"app": "client"})
    await mesh.apply_yaml(DNS_AND_STATIC)
    await mesh.wait_synced(timeout=10)           # raises on a NACK (never synced)
    async with mesh.api_client() as api:
        (entry,) = (await api.get("/debug/syncz")).json()
        assert entry["proxy"] == agent.node_id
        assert all(t["nack"] is None for t in entry["types"].values())
        dump = (await api.get("/debug/config_dump", params={"proxyID": agent.node_id})).json()
    addresses = [lb["endpoint"]["address"]["socketAddress"]["address"] for cla in dump["EDS"]
                 for group in cla.get("endpoints", []) for lb in group.get("lbEndpoints", [])]
    assert "www.googleapis.com" not in addresses
