"""The control plane process runs gRPC with its runtime settings (mizzen.controlplane.grpcenv): a real
``python -m mizzen.controlplane`` accepts xDS connections on gRPC's iomgr TCP endpoints (its ``tcp`` tracer
logs them; EventEngine endpoints log elsewhere: the test fails without the setting), and an operator's own
``GRPC_EXPERIMENTS`` wins."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
from cp_process import controlplane_process
from envoy.service.discovery.v3 import discovery_pb2

from mizzen.controlplane.grpcenv import EXPERIMENTS_ENV, SERVER_EXPERIMENTS

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


async def _tcp_trace_of_one_ads_stream(tmp_path: Path) -> str:
    """Start the control plane with gRPC's tcp tracer on, open one ADS stream, stop it; its stderr."""
    env = {k: v for k, v in os.environ.items() if k != EXPERIMENTS_ENV}
    env.update(GRPC_TRACE="tcp", GRPC_VERBOSITY="debug")
    log = tmp_path / "stderr"
    with log.open("wb") as err:
        async with controlplane_process(
                "--state-dir", str(tmp_path / "state"), "--xds-port", "0", "--xds-tls-port", "-1",
                "--http-port", "0", "--log-level", "WARNING", env=env, stderr=err) as line:
            xds = line.split("xds=")[1].split()[0]
            async with grpc.aio.insecure_channel(xds) as channel:
                call = channel.stream_stream(
                    ADS, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                    response_deserializer=discovery_pb2.DiscoveryResponse.FromString)()
                await call.write(discovery_pb2.DiscoveryRequest(
                    node={"id": "sidecar~10.9.0.1~grpcenv.default~default.svc.cluster.local"},
                    type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster"))
                response = await asyncio.wait_for(call.read(), 10)
                assert isinstance(response, discovery_pb2.DiscoveryResponse), response
                call.cancel()
    return log.read_text(errors="replace")


async def test_control_plane_serves_xds_on_iomgr_endpoints(tmp_path: Path) -> None:
    trace = await _tcp_trace_of_one_ads_stream(tmp_path)
    assert "tcp_posix.cc" in trace, trace[-2000:]   # iomgr's TCP endpoint read and wrote the stream


def _entry_module_env(experiments: str | None) -> list[str]:
    """Import the entry module in a fresh interpreter: is grpc loaded, and GRPC_EXPERIMENTS then."""
    env = {k: v for k, v in os.environ.items() if k != EXPERIMENTS_ENV}
    if experiments is not None:
        env[EXPERIMENTS_ENV] = experiments
    return subprocess.run(
        [sys.executable, "-c", "import os, sys; import mizzen.controlplane.__main__; "
         f"print('grpc' in sys.modules, os.environ.get({EXPERIMENTS_ENV!r}))"],
        env=env, capture_output=True, text=True, timeout=60, check=True).stdout.split()


def test_configure_comes_before_grpc_loads() -> None:
    """The entry module sets the settings before its imports load grpc (gRPC reads them only then)."""
    assert _entry_module_env(None) == ["True", SERVER_EXPERIMENTS]


def test_an_operators_grpc_experiments_win() -> None:
    assert _entry_module_env("monitoring_experiment") == ["True", "monitoring_experiment"]
