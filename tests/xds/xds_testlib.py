"""Helpers for the xDS tests: resource builders, a fake ADS client over a real channel, an Envoy process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.type.matcher.v3 import regex_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.protobuf.message import Message

from mizzen.agent.binary import envoy_binary
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceSet

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
NODE = "sidecar~127.0.0.1~t1.default~default.svc.cluster.local"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _any(msg: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def _addr(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def listener(name: str, host: str, port: int, route_config: str) -> listener_pb2.Listener:
    """An HTTP listener whose routes come from RDS ``route_config``."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=route_config),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router",
                                         typed_config=_any(router_pb2.Router()))],
    )
    return listener_pb2.Listener(
        name=name, address=_addr(host, port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=_any(hcm))])],
    )


def route_config(name: str, *, cluster: str | None = None, body: str | None = None,
                 regex: str | None = None) -> route_pb2.RouteConfiguration:
    """One catch-all route: to ``cluster`` or a direct 200 with ``body``; ``regex`` matches paths instead."""
    if regex is not None:
        match = route_components_pb2.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex=regex))
    else:
        match = route_components_pb2.RouteMatch(prefix="/")
    route = route_components_pb2.Route(match=match)
    if cluster is not None:
        route.route.CopyFrom(route_components_pb2.RouteAction(cluster=cluster))
    else:
        route.direct_response.CopyFrom(route_components_pb2.DirectResponseAction(
            status=200, body=base_pb2.DataSource(inline_string=body or "")))
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[route_components_pb2.VirtualHost(
        name="all", domains=["*"], routes=[route])])


def eds_cluster(name: str) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.EDS, connect_timeout=duration_pb2.Duration(seconds=1),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()))


def load_assignment(cluster: str, endpoints: Iterable[tuple[str, int]]) -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster, endpoints=[
        endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
            endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=_addr(h, p)))
            for h, p in endpoints])])


def resources(clusters: Iterable[Message] = (), endpoints: Iterable[Message] = (),
              listeners: Iterable[Message] = (), routes: Iterable[Message] = ()) -> ResourceSet:
    def by_name(msgs: Iterable[Any], attr: str = "name") -> dict[str, Message]:
        return {getattr(m, attr): m for m in msgs}
    return ResourceSet({CLUSTER: by_name(clusters), ENDPOINT: by_name(endpoints, "cluster_name"),
                        LISTENER: by_name(listeners), ROUTE: by_name(routes)})


# --- fake ADS client ---

class FakeAdsClient:
    """One ADS stream over a real gRPC channel; the test drives requests and reads responses."""

    def __init__(self, target: str, node_id: str = NODE, metadata: Mapping[str, Any] | None = None) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.node_id = node_id
        self.metadata = dict(metadata or {})
        self._out: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self._sent_node = False
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).StreamAggregatedResources(
            self._requests())
        # read continuously: cancelling a pending call.read() would cancel the whole RPC
        self._in: asyncio.Queue[discovery_pb2.DiscoveryResponse | BaseException | None] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                resp = await self.call.read()
                if resp is grpc.aio.EOF:
                    self._in.put_nowait(None)
                    return
                self._in.put_nowait(resp)
        except grpc.aio.AioRpcError as e:
            self._in.put_nowait(e)

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while True:
            req = await self._out.get()
            if req is None:
                return
            yield req

    def send(self, type_url: str, *, names: Iterable[str] = (), version: str = "", nonce: str = "",
             error: str | None = None, with_node: bool | None = None) -> None:
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names),
                                             version_info=version, response_nonce=nonce)
        if with_node if with_node is not None else not self._sent_node:
            req.node.id = self.node_id
            md = struct_pb2.Struct()
            md.update(self.metadata)
            req.node.metadata.CopyFrom(md)
            self._sent_node = True
        if error is not None:
            req.error_detail.code = 3
            req.error_detail.message = error
        self._out.put_nowait(req)

    def ack(self, resp: discovery_pb2.DiscoveryResponse, names: Iterable[str] = ()) -> None:
        self.send(resp.type_url, names=names, version=resp.version_info, nonce=resp.nonce)

    async def recv(self, timeout: float = 2.0) -> discovery_pb2.DiscoveryResponse:
        resp = await asyncio.wait_for(self._in.get(), timeout)
        if isinstance(resp, BaseException):
            raise resp
        assert resp is not None, "stream ended"
        return resp

    async def expect_silence(self, seconds: float = 0.3) -> None:
        with contextlib.suppress(TimeoutError):
            resp = await asyncio.wait_for(self._in.get(), seconds)
            raise AssertionError(f"unexpected response: {resp}")

    async def close(self) -> None:
        self._out.put_nowait(None)
        self.call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.channel.close()


def names_of(resp: discovery_pb2.DiscoveryResponse) -> list[str]:
    out = []
    for a in resp.resources:
        for cls, attr in ((cluster_pb2.Cluster, "name"), (listener_pb2.Listener, "name"),
                          (route_pb2.RouteConfiguration, "name"),
                          (endpoint_pb2.ClusterLoadAssignment, "cluster_name")):
            if a.Is(cls.DESCRIPTOR):
                m = cls()
                a.Unpack(m)
                out.append(getattr(m, attr))
    return out


# --- Envoy ---

class Envoy:
    """A real Envoy with an ADS bootstrap (SotW, or delta) pointing at ``xds_host:xds_port``; admin on a free
    port."""

    def __init__(self, node_id: str, xds_host: str, xds_port: int, admin_host: str,
                 metadata: Mapping[str, Any] | None = None, *, delta: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mizzen-xds-envoy-"))
        self.admin_path = self.dir / "admin"
        xds_address = {"address": xds_host, "port_value": xds_port}
        bootstrap = {
            "node": {"id": node_id, "cluster": "t1.default", "metadata": dict(metadata or {})},
            "admin": {"address": {"socket_address": {"address": admin_host, "port_value": 0}}},
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "DELTA_GRPC" if delta else "GRPC", "transport_api_version": "V3",
                    "set_node_on_first_message_only": True,
                    "grpc_services": [{"envoy_grpc": {
                        "cluster_name": "xds_cluster",
                        "retry_policy": {"retry_back_off": {"base_interval": "0.05s",
                                                            "max_interval": "0.5s"}},
                    }}],
                },
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
            },
            "static_resources": {"clusters": [{
                "name": "xds_cluster", "type": "STATIC", "connect_timeout": "1s",
                "typed_extension_protocol_options": {HTTP_OPTIONS: {
                    "@type": "type.googleapis.com/" + HTTP_OPTIONS,
                    "explicit_http_config": {"http2_protocol_options": {}}}},
                "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": xds_address}}},
                ]}]},
            }]},
        }
        self.config = self.dir / "envoy.json"
        self.config.write_text(json.dumps(bootstrap))
        self.log = self.dir / "envoy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(
                [str(envoy_binary()), "-c", str(self.config), "--disable-hot-restart", "-l", "warning",
                 "--admin-address-path", str(self.admin_path)],
                stdout=logf, stderr=subprocess.STDOUT)

    async def admin(self, timeout: float = 10.0) -> str:
        """``http://host:port`` of the admin interface, once Envoy wrote it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.admin_path.exists() and self.admin_path.read_text().strip():
                return "http://" + self.admin_path.read_text().strip()
            assert self.proc is not None and self.proc.poll() is None, f"envoy exited: {self.logs()}"
            await asyncio.sleep(0.05)
        raise TimeoutError(f"envoy admin not up: {self.logs()}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
