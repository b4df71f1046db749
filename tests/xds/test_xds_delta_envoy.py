"""Delta ADS against real Envoy: the same config as state-of-the-world, removals, only changes sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from xds_harness import HOST, Harness
from xds_testlib import Envoy, eds_cluster, free_port, listener, load_assignment, resources, route_config

from mizzen.xds import SYNCED
from mizzen.xds.resources import CLUSTER, ENDPOINT, ResourceSet

pytestmark = pytest.mark.e2e

ENVOY_HOST = "127.71.0.4"
BACKEND = ("127.71.0.5", 18080)   # never dialed: the tests compare config, not traffic
SOTW_NODE = "sidecar~127.71.0.4~sotw.default~default.svc.cluster.local"
DELTA_NODE = "sidecar~127.71.0.4~delta.default~default.svc.cluster.local"
METADATA = {"NAMESPACE": "default", "LABELS": {"app": "t1"}}


def config(port: int, clusters: int = 3, *, ep_port: int = 18080, extra_listener: bool = True) -> ResourceSet:
    names = [f"c{i}" for i in range(clusters)]
    listeners = [listener("http", ENVOY_HOST, port, "r1")]
    if extra_listener:
        listeners.append(listener("http2", ENVOY_HOST, port + 1, "r2"))
    return resources(
        clusters=[eds_cluster(n) for n in names],
        endpoints=[load_assignment(n, [(BACKEND[0], ep_port + i)]) for i, n in enumerate(names)],
        listeners=listeners,
        routes=[route_config("r1", cluster="c0"), route_config("r2", cluster=names[-1])],
    )


@pytest.fixture
async def envoys(harness: Harness) -> AsyncIterator[tuple[Envoy, Envoy]]:
    assert harness.ads.port is not None
    pair = (Envoy(SOTW_NODE, HOST, harness.ads.port, ENVOY_HOST, METADATA, delta=False),
            Envoy(DELTA_NODE, HOST, harness.ads.port, ENVOY_HOST, METADATA, delta=True))
    try:
        yield pair
    finally:
        for e in pair:
            e.stop()


async def dump(envoy: Envoy) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
        r = await client.get(await envoy.admin() + "/config_dump?include_eds")
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out


_VOLATILE = {"version_info", "last_updated", "@type_version"}


def normalized(doc: Any) -> Any:
    """A config dump without what differs between two Envoys holding the same config: timestamps, versions
    (delta has per-resource versions, SotW one per type) and the bootstrap (node ids differ)."""
    if isinstance(doc, dict):
        if "bootstrap" in doc:
            return None
        return {k: normalized(v) for k, v in doc.items() if k not in _VOLATILE}
    if isinstance(doc, list):
        items = [normalized(v) for v in doc]
        return sorted(items, key=repr)
    return doc


def dynamic(doc: dict[str, Any]) -> dict[str, Any]:
    """Names of the dynamic clusters, active listeners, routes and endpoints in a config dump."""
    out: dict[str, Any] = {}
    for section in doc["configs"]:
        t = section["@type"].rsplit(".", 1)[-1]
        if t == "ClustersConfigDump":
            out["clusters"] = sorted(c["cluster"]["name"] for c in section.get("dynamic_active_clusters", []))
        elif t == "ListenersConfigDump":
            out["listeners"] = sorted(x["name"] for x in section.get("dynamic_listeners", [])
                                      if "active_state" in x)   # a removed one drains for a while
        elif t == "RoutesConfigDump":
            routes = section.get("dynamic_route_configs", [])
            out["routes"] = sorted(r["route_config"]["name"] for r in routes)
        elif t == "EndpointsConfigDump":
            out["endpoints"] = sorted(e["endpoint_config"]["cluster_name"]
                                      for e in section.get("dynamic_endpoint_configs", []))
    return out


async def same_dumps(a: Envoy, b: Envoy, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        da, db = await dump(a), await dump(b)
        if normalized(da) == normalized(db):
            return da
        if time.monotonic() > deadline:
            assert normalized(da) == normalized(db)
        await asyncio.sleep(0.1)


async def test_delta_envoy_reaches_the_same_config_as_sotw_and_removes_on_delete(
        harness: Harness, envoys: tuple[Envoy, Envoy]) -> None:
    port = free_port(ENVOY_HOST)
    harness.on_connect_snapshot = lambda _n: config(port)
    for e in envoys:
        e.start()
    await harness.ads.status.wait_synced([SOTW_NODE, DELTA_NODE], timeout=10)
    assert {p["proxy"]: p["xds"] for p in harness.ads.status.to_dict()} == {SOTW_NODE: "sotw",
                                                                          DELTA_NODE: "delta"}
    first = await same_dumps(*envoys)
    assert dynamic(first) == {"clusters": ["c0", "c1", "c2"], "listeners": ["http", "http2"],
                              "routes": ["r1", "r2"], "endpoints": ["c0", "c1", "c2"]}

    # delete a cluster (and the listener/route that used it); change another cluster's endpoints
    smaller = config(port, clusters=2, ep_port=19000, extra_listener=False)
    for node in (SOTW_NODE, DELTA_NODE):
        harness.cache.set_snapshot(node, smaller)
    await harness.ads.status.wait_synced([SOTW_NODE, DELTA_NODE], timeout=5)
    after = await same_dumps(*envoys)
    assert dynamic(after) == {"clusters": ["c0", "c1"], "listeners": ["http"], "routes": ["r1", "r2"],
                              "endpoints": ["c0", "c1"]}
    assert "19000" in str(after) and "18080" not in str(after)


async def test_delta_push_sends_only_the_changed_resources(
        harness: Harness, envoys: tuple[Envoy, Envoy]) -> None:
    port = free_port(ENVOY_HOST)
    harness.on_connect_snapshot = lambda _n: config(port, clusters=40)
    delta_envoy = envoys[1]
    delta_envoy.start()
    await harness.ads.status.wait_synced([DELTA_NODE], timeout=10)
    before = await dump(delta_envoy)
    sent, resources_before = harness.ads.responses_sent, harness.ads.resources_sent
    changed = config(port, clusters=40)
    cla = changed.by_type[ENDPOINT]["c7"]
    cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value = 19999  # type: ignore[attr-defined]
    harness.cache.set_snapshot(DELTA_NODE, changed)
    await harness.ads.status.wait_synced([DELTA_NODE], timeout=5)
    assert harness.ads.responses_sent - sent == 1                # one EDS response...
    assert harness.ads.resources_sent - resources_before == 1    # ...carrying one ClusterLoadAssignment
    assert harness.ads.status.type_state(DELTA_NODE, CLUSTER) == SYNCED
    after = await dump(delta_envoy)
    assert "19999" in str(after) and "19999" not in str(before)
