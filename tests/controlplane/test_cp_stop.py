"""What a stopping control plane serves: until its xDS server is down, a proxy that (re)connects gets the same
config as from a running one (the flake behind tests/e2e's restart test: a sidecar reconnecting inside the
stop's shutdown window got listeners without Istio's telemetry, Envoy updated them in place and closed the
connections on the old filter chains after its drain time, a request in flight on one failed), and the
listener plugins a control plane registers stay registered exactly while one runs in the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from harness import Mesh, alloc_ip, free_port
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core import plugins
from mizzen.telemetry.plugin import TelemetryPlugin
from mizzen.xds.resources import LISTENER

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: ratings}
"""


async def listeners(target: str, ip: str) -> discovery_pb2.DiscoveryResponse:
    """Open one ADS stream as a local-mode sidecar on ``ip`` (the metadata our agent sends), ask for its
    listeners, return the first response."""
    metadata = struct_pb2.Struct()
    metadata.update({"NAMESPACE": "bookinfo", "LABELS": {"app": "productpage", "version": "v1"},
                     "INSTANCE_IPS": ip, "WORKLOAD_NAME": "productpage-v1-a", "INTERCEPTION_MODE": "NONE",
                     "MIZZEN_HTTP_PROXY_PORT": "15080"})
    request = discovery_pb2.DiscoveryRequest(type_url=LISTENER)
    request.node.id = f"sidecar~{ip}~productpage-v1-a.bookinfo~bookinfo.svc.cluster.local"
    request.node.metadata.CopyFrom(metadata)
    async with grpc.aio.insecure_channel(target) as channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(iter([request]))
        try:
            response: discovery_pb2.DiscoveryResponse = await asyncio.wait_for(call.read(), 5)
            return response
        finally:
            call.cancel()


async def test_a_proxy_connecting_while_the_control_plane_stops_gets_the_same_listeners() -> None:
    async with Mesh() as mesh:
        cp = mesh.cp
        await mesh.apply_yaml(SERVICE)
        await mesh.wait_synced()
        target = f"127.0.0.1:{cp.xds_port}"
        ip = alloc_ip()
        before = await listeners(target, ip)
        assert b"istiocustom" in before.SerializeToString()    # Istio's request metrics are on its listeners

        # An API request in flight holds stop() in the HTTP server's shutdown (as `mizzen apply` at SIGTERM
        # would) while xDS still serves: a deterministic stand-in for the moment between the end of the
        # proxies' streams and the gRPC server's stop, where a proxy's reconnect lands in a full suite run.
        host, port = cp.http_url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"POST /apis/apply HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {cp.token}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n"
                     .encode())
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 100")   # handler running
        stopping = asyncio.create_task(cp.stop())
        try:
            await asyncio.sleep(0.05)
            assert not stopping.done()
            during = await listeners(target, ip)
        finally:
            writer.close()                               # the request ends; stop() goes on
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            await asyncio.wait_for(stopping, 10)
        why = f"other listeners (Istio's telemetry in them: {b'istiocustom' in during.SerializeToString()})"
        assert (during.version_info, list(during.resources)) == (before.version_info,
                                                                 list(before.resources)), why


async def test_telemetry_is_registered_while_a_control_plane_runs_also_after_a_failed_start() -> None:
    def registered() -> bool:
        return any(p.name == TelemetryPlugin.name for p in plugins.PLUGINS)

    before = registered()              # False unless a control plane runs in this process now
    taken = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", taken))
        s.listen()
        cp = ControlPlane(ControlPlaneOptions(xds_port=0, http_port=taken))
        with pytest.raises(OSError):
            await cp.start()
    assert registered() == before      # the failed start gave back what it took
    async with ControlPlane(ControlPlaneOptions(xds_port=0, http_port=0)):
        assert registered()
    assert registered() == before
