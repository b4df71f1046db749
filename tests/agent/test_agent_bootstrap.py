"""Agent bootstrap: the node identity round-trips into the control plane's Proxy model; Envoy accepts it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from google.protobuf import json_format, struct_pb2

from mizzen.agent.binary import envoy_binary
from mizzen.agent.bootstrap import XDS_CLUSTER, ProxySpec, build_bootstrap, render_bootstrap
from mizzen.core.proxy import Proxy, ProxyType
from mizzen.telemetry import exchange


def sidecar_spec() -> ProxySpec:
    return ProxySpec(ProxyType.SIDECAR, "127.10.250.7", "bookinfo", "reviews-v2-abc", admin_port=15999,
                     xds_port=15123, labels={"app": "reviews", "version": "v2"},
                     service_account="bookinfo-reviews", app_host="127.0.0.9",
                     locality="us-east/zone-a/rack1")


def test_identity_round_trips_through_node_metadata() -> None:
    boot = build_bootstrap(sidecar_spec())
    node = boot["node"]
    # what the ADS server sees: metadata as a protobuf Struct turned back into a dict
    meta = json_format.MessageToDict(json_format.ParseDict(node["metadata"], struct_pb2.Struct()))
    proxy = Proxy.from_node(node["id"], meta)
    assert node["id"] == "sidecar~127.10.250.7~reviews-v2-abc.bookinfo~bookinfo.svc.cluster.local"
    assert (proxy.type, proxy.ip, proxy.namespace, proxy.workload_name) == (
        ProxyType.SIDECAR, "127.10.250.7", "bookinfo", "reviews-v2-abc")
    assert proxy.labels == {"app": "reviews", "version": "v2"}
    assert proxy.service_account == "bookinfo-reviews"
    assert proxy.app_host == "127.0.0.9" and proxy.http_proxy_port == 15080
    assert proxy.locality == "us-east/zone-a/rack1" and proxy.interception_mode == "NONE"
    assert node["locality"] == {"region": "us-east", "zone": "zone-a", "sub_zone": "rack1"}


def test_gateway_ports_and_no_http_proxy_for_routers() -> None:
    spec = ProxySpec(ProxyType.ROUTER, "127.10.250.8", "istio-system", "istio-ingressgateway", admin_port=1,
                     labels={"istio": "ingressgateway"}, gateway_ports={80: 18080, 443: 18443})
    node = build_bootstrap(spec)["node"]
    proxy = Proxy.from_node(node["id"], node["metadata"])
    assert proxy.is_gateway and proxy.http_proxy_port == 0
    assert proxy.gateway_listen_port(80) == 18080 and proxy.gateway_listen_port(9000) == 9000


def test_stats_flush_on_admin_and_the_peer_header_inline() -> None:
    """Histograms merge when the agent reads the stats (istio_requests_total is the duration's count); the
    peer-metadata header is one of Envoy's O(1) request headers. Envoy accepting both: the test below."""
    boot = build_bootstrap(sidecar_spec())
    assert boot["stats_flush_on_admin"] is True and "stats_flush_interval" not in boot
    assert boot["inline_headers"] == [{"inline_header_name": exchange.HEADER,
                                       "inline_header_type": "REQUEST_HEADER"}]


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_ads_points_at_the_control_plane(delta: bool) -> None:
    boot = build_bootstrap(dataclasses.replace(sidecar_spec(), delta_xds=delta))
    ads = boot["dynamic_resources"]
    assert ads["ads_config"]["api_type"] == ("DELTA_GRPC" if delta else "GRPC")
    # reconnect to a returning control plane within 0.5 s, not Envoy's default 0.5 s doubling to 30 s
    assert ads["ads_config"]["grpc_services"] == [{"envoy_grpc": {
        "cluster_name": XDS_CLUSTER,
        "retry_policy": {"retry_back_off": {"base_interval": "0.1s", "max_interval": "0.5s"}}}}]
    assert ads["cds_config"] == ads["lds_config"] == {"ads": {}, "resource_api_version": "V3"}
    xds, stats = boot["static_resources"]["clusters"]
    sock = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (xds["type"], xds["connect_timeout"], sock) == (
        "STATIC", "1s", {"address": "127.0.0.1", "port_value": 15123})
    # Envoy's admin is a 0600 Unix socket; only the prometheus_stats listener is on the proxy's address
    assert boot["admin"]["address"] == {"pipe": {"path": "admin.sock", "mode": 0o600}}
    (stats_listener,) = boot["static_resources"]["listeners"]
    assert stats_listener["address"]["socket_address"] == {"address": "127.10.250.7", "port_value": 15090}
    assert stats["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "pipe": {"path": "admin.sock"}}


@pytest.mark.parametrize("xds_host", ["127.0.0.1", "istiod.istio-system.svc"], ids=["ip", "name"])
async def test_envoy_accepts_the_bootstrap(tmp_path: Path, xds_host: str) -> None:
    """A control plane by name (a pod's ``istiod.istio-system.svc``) is a STRICT_DNS cluster: Envoy refuses
    a name in a STATIC one ("malformed IP address")."""
    path = tmp_path / "envoy.json"
    path.write_text(render_bootstrap(dataclasses.replace(sidecar_spec(), xds_host=xds_host)))
    boot = json.loads(path.read_text())
    assert boot["node"]["cluster"] == "reviews.bookinfo"
    xds = boot["static_resources"]["clusters"][0]
    assert xds["type"] == ("STATIC" if xds_host[0].isdigit() else "STRICT_DNS")
    proc = await asyncio.create_subprocess_exec(
        str(envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode()
    assert b"OK" in out
