"""The agent's scrape path (``:15090`` and the merged ``:15020``) against a real Envoy: ``filter=`` with
Istio's names (``istio_requests_total`` and Istio's duration are derived from one Envoy histogram) and Envoy's
other parameters passed through; no flush probe when Envoy holds no counted histogram (telemetry off), exact
counts at the first scrape once it does; one kept connection each to Envoy's admin and to the app's metrics
port, closed when the agent stops."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from telemetry_kit import get_ratings_ok, metrics_disabled, parse, ratings_and_client, total

from harness import Mesh, alloc_ip, eventually
from mizzen.agent.bootstrap import AGENT_ADMIN_PORT, STATS_PORT, ProxySpec
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.agent.metrics_server import MERGED_STATS_PORT
from mizzen.core.proxy import ProxyType
from mizzen.telemetry.metrics import COUNTED_DURATION
from mizzen.telemetry.stats_filter import BadFilter, filter_families, stats_filter

NS = "scrapens"
METRICS_OFF = metrics_disabled("metrics-off", NS, "ALL_METRICS")
REQ = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds"
PORTS = (STATS_PORT, MERGED_STATS_PORT)


async def _scrape(agent: Agent, port: int, query: str = "") -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        return await c.get(f"http://{agent.spec.effective_admin_host}:{port}/stats/prometheus{query}")


async def _text(agent: Agent, port: int, query: str = "") -> str:
    r = await _scrape(agent, port, query)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.text


def _families(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


async def _admin_stat(agent: Agent, name: str) -> int:
    """One of Envoy's admin listener counters (the read itself is one request and one connection)."""
    m = re.search(rf"^{re.escape(name)}: (\d+)$",
                  await agent.admin_get(f"/stats?filter=^{re.escape(name)}$"), re.M)
    assert m is not None, name
    return int(m[1])


async def _admin_requests_per_scrape(agent: Agent, port: int, scrapes: int = 4) -> float:
    before = await _admin_stat(agent, "http.admin.downstream_rq_total")
    for _ in range(scrapes):
        await _text(agent, port)
    after = await _admin_stat(agent, "http.admin.downstream_rq_total")
    return (after - before - 1) / scrapes          # the second read counts itself


async def test_filter_by_istio_names_and_envoy_parameters(mesh: Mesh) -> None:
    client, server = await ratings_and_client(mesh, NS, "reviews-v2-5d8c9f7b4-s8k2x")
    async with mesh.client_via(client) as http:
        await eventually(lambda: get_ratings_ok(http), timeout=10)
        await asyncio.sleep(0.2)            # the first request's access log written at both proxies
        base = {port: total(parse(await _text(server, port)), REQ, reporter="destination") for port in PORTS}
        for _ in range(3):
            await get_ratings_ok(http)
    for port in PORTS:
        # Istio's name: the derived family alone, exact with no wait
        text = await _text(server, port, "?filter=istio_requests_total")
        assert _families(text) == {REQ}, (port, _families(text))
        assert total(parse(text), REQ, reporter="destination") - base[port] == 3, port
        # Istio's duration histogram under Istio's name, and no request count
        text = await _text(server, port, "?filter=istio_request_duration")
        assert _families(text) == {DURATION}, (port, _families(text))
        assert total(parse(text), DURATION + "_count", reporter="destination") - base[port] == 3, port
        assert "_counted" not in text
        # Envoy's own stats filter as before, the derived families stay out
        text = await _text(server, port, "?filter=^server%5C.live$")
        assert _families(text) == {"envoy_server_live"}, (port, _families(text))
        # Envoy's other parameters pass through
        summary = await _text(server, port, "?filter=istio_requests_total|istio_request_duration"
                                            "&histogram_buckets=summary")
        assert f"# TYPE {DURATION} summary" in summary and 'quantile="0.5"' in summary
        assert total(parse(summary), REQ, reporter="destination") - base[port] == 3, port
        readout = "?filter=control_plane%5C.identifier"
        assert "envoy_control_plane_identifier" not in await _text(server, port, readout)
        assert "envoy_control_plane_identifier{text_value=" in await _text(server, port,
                                                                           readout + "&text_readouts")
        xds = "?filter=^cluster%5C.xds-grpc%5C."
        every, used = [_families(await _text(server, port, q)) for q in (xds, xds + "&usedonly")]
        assert "envoy_cluster_upstream_rq_total" in used and used < every
        assert "envoy_cluster_upstream_cx_overflow" in every - used
        # a bad query: Envoy's or the filter's reason in one line, 400
        for bad in ("?filter=(", "?histogram_buckets=bogus"):
            r = await _scrape(server, port, bad)
            assert r.status_code == 400 and r.text.count("\n") == 1, (port, bad, r.status_code, r.text)


async def test_no_flush_probe_without_the_counted_histogram_exact_once_it_appears(mesh: Mesh) -> None:
    await mesh.apply_yaml(METRICS_OFF)
    client, server = await ratings_and_client(mesh, NS, "reviews-v2-5d8c9f7b4-s8k2x")
    async with mesh.client_via(client) as http:
        await eventually(lambda: get_ratings_ok(http), timeout=10)
        for _ in range(3):
            await get_ratings_ok(http)
    await asyncio.sleep(0.2)
    for agent in (client, server):
        assert REQ not in await _text(agent, STATS_PORT)
        for port in PORTS:
            # one admin request per scrape: Envoy's stats, no probe
            assert await _admin_requests_per_scrape(agent, port) == 1, (agent.node_id, port)
    # metrics on again: the first scrape after the first requests already counts them all
    await mesh.delete_yaml(METRICS_OFF)
    await mesh.wait_synced()
    await eventually(lambda: _listeners_with_stats_loggers(client), timeout=10)
    async with mesh.client_via(client) as http:      # a new connection: the new listener config
        for _ in range(4):
            await get_ratings_ok(http)
    text = await _text(client, STATS_PORT)
    assert total(parse(text), REQ, reporter="source") == 4
    assert total(parse(text), DURATION + "_count", reporter="source") == 4
    # from then on every scrape probes (at least 2 probes after the first)
    assert await _admin_requests_per_scrape(client, STATS_PORT) >= 3


async def _listeners_with_stats_loggers(agent: Agent) -> None:
    """The update is in force: no listener warming, the active ones log Istio's metrics."""
    assert await _admin_stat(agent, "listener_manager.total_listeners_warming") == 0
    assert "access_loggers.stats" in await agent.admin_get("/config_dump?resource=dynamic_listeners")


class CountingApp:
    """A real HTTP/1.1 keep-alive server for the app's metrics: counts the connections it accepts and the
    ones its clients closed."""

    def __init__(self) -> None:
        self.accepted = self.closed = self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        body = b"# TYPE my_app_orders_total counter\nmy_app_orders_total 5\n"
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"GET "):
                    break
                self.requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed += 1
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def counting_app(ip: str, port: int) -> AsyncIterator[CountingApp]:
    app = CountingApp()
    server = await asyncio.start_server(app.handle, ip, port)
    try:
        yield app
    finally:
        server.close()
        await server.wait_closed()


async def test_sessions_kept_across_scrapes_and_closed_at_stop(mesh: Mesh) -> None:
    ip, app_ip = alloc_ip(), alloc_ip()
    spec = ProxySpec(type=ProxyType.SIDECAR, ip=ip, namespace=NS, name="kept-v1", admin_port=AGENT_ADMIN_PORT,
                     xds_port=mesh.cp.xds_port, app_host=app_ip, app_metrics_port=9100)
    async with counting_app(app_ip, 9100) as app:
        agent = Agent(spec, AgentOptions(concurrency=1))
        await agent.start(ready_timeout=20)
        try:
            cx0 = await _admin_stat(agent, "http.admin.downstream_cx_total")
            for _ in range(5):
                text = await _text(agent, MERGED_STATS_PORT)
                assert "my_app_orders_total 5" in text and "envoy_server_live" in text
            for _ in range(3):
                await _text(agent, STATS_PORT)
            cx1 = await _admin_stat(agent, "http.admin.downstream_cx_total")
            assert app.requests == 5 and app.accepted == 1, (app.requests, app.accepted)
            # the 8 scrapes' admin reads over one connection (plus the second _admin_stat's own)
            assert cx1 - cx0 == 2, cx1 - cx0
            # filter= reaches the app's families on :15020 too
            text = await _text(agent, MERGED_STATS_PORT, "?filter=my_app")
            assert _families(text) == {"my_app_orders_total"}
            # no traffic, so no counted histogram: never a probe
            assert await _admin_requests_per_scrape(agent, STATS_PORT) == 1
            # the kept admin connection is open (besides the read's own) until the metrics server stops
            assert await _admin_stat(agent, "http.admin.downstream_cx_active") == 2
            assert agent.metrics_server is not None
            await agent.metrics_server.stop()
            await eventually(lambda: _admin_connections(agent, 1), timeout=5)
            await eventually(lambda: _closed(app), timeout=5)
        finally:
            await agent.stop()


async def _admin_connections(agent: Agent, n: int) -> None:
    assert await _admin_stat(agent, "http.admin.downstream_cx_active") == n


async def _closed(app: CountingApp) -> None:
    assert app.closed == 1, app.closed


def test_filter_translation_and_family_filtering() -> None:
    """Which derived families a filter names (as the regex would match Istio's Envoy names), what Envoy is
    sent, and whole families kept or dropped."""
    f = stats_filter("istio_requests_total")
    assert f.derived == {REQ} and re.search(f.envoy, f"istiocustom.{COUNTED_DURATION}.mizzen_istio.x")
    assert stats_filter("istio_request_duration").derived == {DURATION}
    assert stats_filter("^istiocustom\\.istio_").derived == {REQ, DURATION}
    assert stats_filter("").derived == {REQ, DURATION}
    for other in ("counted", "^server\\.live$", "istio_tcp_", "^istio_requests_total"):
        f = stats_filter(other)
        assert not f.derived and f.envoy == other, other
    with pytest.raises(BadFilter, match="invalid filter= regex"):
        stats_filter("(")
    text = "\n".join([
        f"# TYPE {DURATION} histogram",
        f'{DURATION}_bucket{{le="+Inf"}} 2', f"{DURATION}_sum 3", f"{DURATION}_count 2",
        f"# TYPE {REQ} counter", f'{REQ}{{reporter="source"}} 2',
        "untyped_total 1",
        "# TYPE envoy_server_live gauge", "envoy_server_live 1", ""])
    assert _families(stats_filter("istio_requests_total").renamed(text)) == {REQ, "envoy_server_live"}
    kept = filter_families(text, lambda family: family in (DURATION, "untyped_total"))
    assert kept.splitlines() == [*text.splitlines()[:4], "untyped_total 1"]
    assert filter_families(text, lambda family: False) == ""
