"""Bounded load, like istiod's PILOT_MAX_REQUESTS_PER_SECOND and PILOT_PUSH_THROTTLE: new xDS streams are
admitted at a bounded rate (real gRPC streams against a real control plane), settings come from Istio's
environment variables."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from mizzen.controlplane.limits import RateLimiter
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.xds.resources import CLUSTER


async def first_response(target: str, node_id: str) -> discovery_pb2.DiscoveryResponse:
    """Open one ADS stream as ``node_id``, ask for clusters, return the first response, close."""
    async with grpc.aio.insecure_channel(target) as channel:
        request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
        request.node.id = node_id
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(iter([request]))
        try:
            response: discovery_pb2.DiscoveryResponse = await call.read()
            return response
        finally:
            call.cancel()



async def test_rate_limiter_bounds_rate_after_the_burst() -> None:
    """5 at once, then 50/s. Judged by the token bucket's invariant, which holds however late the event loop
    wakes a waiter: in any window between two grants, at most ``burst + rate * window`` are granted. (How
    many had to wait is not fixed: an overshooting sleep refills more than one token, so the next may not.)"""
    limiter = RateLimiter(rate=50, burst=5)
    granted: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        granted.append(time.monotonic())

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(15)))
    took = time.monotonic() - t0
    assert took >= 0.18, took          # 5 at once, then 10 more at 50/s: 0.2 s at least
    for i in range(len(granted)):
        for j in range(i + 1, len(granted)):
            # + 0.01 token: the clock is read a few microseconds after each grant
            assert j - i + 1 <= 5 + 50 * (granted[j] - granted[i]) + 0.01, (i, j, granted)
    assert 1 <= limiter.waited <= 10   # the burst of 5 never waits; after it, someone does
    with pytest.raises(ValueError):
        RateLimiter(rate=0)


def test_istio_environment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOT_MAX_REQUESTS_PER_SECOND", "7.5")
    monkeypatch.setenv("PILOT_PUSH_THROTTLE", "3")
    opts = ControlPlaneOptions(xds_port=0, http_port=None)
    assert (opts.max_requests_per_second, opts.push_throttle) == (7.5, 3)
    cp = ControlPlane(opts)
    assert cp.admission.rate == 7.5 and cp.pusher.throttle == 3
    monkeypatch.setenv("PILOT_PUSH_THROTTLE", "lots")   # not a number: the default, with a warning
    assert ControlPlaneOptions().push_throttle == 0


async def test_a_reconnect_storm_is_admitted_at_the_configured_rate() -> None:
    opts = ControlPlaneOptions(xds_host="127.71.9.20", xds_port=0, http_port=None, max_requests_per_second=10)
    async with ControlPlane(opts) as cp:
        t0 = time.monotonic()
        firsts = await asyncio.wait_for(asyncio.gather(*(
            first_response(cp.xds_address, f"sidecar~10.9.0.{i}~app-{i}.storm~storm.svc.cluster.local")
            for i in range(1, 21))), 20)
        took = time.monotonic() - t0
        assert all(r.type_url == CLUSTER for r in firsts)
        assert took >= 0.9, took            # 10 admitted at once, the other 10 at 10 per second
        assert cp.admission.waited >= 9
