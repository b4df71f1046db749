"""``istio_requests_total`` from the request duration histogram's exact count (one stat fewer per request and
proxy, :data:`mizzen.telemetry.metrics.COUNTED_DURATION`): right after requests complete, every scrape of
``:15090`` and the merged ``:15020`` counts them exactly, with no wait for Envoy's stats flush; Envoy's own
stats still update; with the duration disabled by a Telemetry, a real counter counts."""

from __future__ import annotations

import asyncio

from telemetry_kit import Sample, get_ratings_ok, metrics_disabled, parse, ratings_and_client, scrape, total

from harness import Mesh, eventually
from mizzen.agent.bootstrap import STATS_PORT
from mizzen.agent.envoy import Agent
from mizzen.agent.metrics_server import MERGED_STATS_PORT
from mizzen.telemetry import prometheus
from mizzen.telemetry.metrics import COUNTED_DURATION

NS = "countns"
NO_DURATION = metrics_disabled("no-duration", NS, "REQUEST_DURATION")
REQ = "istio_requests_total"
DURATION_COUNT = "istio_request_duration_milliseconds_count"


async def _scrapes(agent: Agent) -> list[list[Sample]]:
    """:15090 and the agent's merged :15020."""
    return [await scrape(agent), await scrape(agent, MERGED_STATS_PORT)]


async def test_requests_total_exact_at_every_scrape_without_a_counter(mesh: Mesh) -> None:
    client, server = await ratings_and_client(mesh, NS, "reviews-v2-5d8c9f7b4-q7r2t")
    async with mesh.client_via(client) as http:
        await eventually(lambda: get_ratings_ok(http), timeout=10)
        await asyncio.sleep(0.2)            # the first request's access log written at both proxies
        base = {a: [total(s, REQ, reporter=rep) for s in await _scrapes(a)]
                for a, rep in ((client, "source"), (server, "destination"))}
        uptime0 = total(await scrape(server), "envoy_server_uptime")
        sent = 0
        for burst in (1, 4, 9):
            for _ in range(burst):
                await get_ratings_ok(http)
            sent += burst
            # no wait: Envoy merged its histograms for this scrape (the stats flush is every 5 s otherwise)
            for a, rep in ((client, "source"), (server, "destination")):
                for s, b in zip(await _scrapes(a), base[a], strict=True):
                    assert total(s, REQ, reporter=rep) - b == sent, (rep, burst)
                    assert total(s, DURATION_COUNT, reporter=rep) == total(s, REQ, reporter=rep)
                    assert len([n for n, _, _ in s if n == REQ]) == len(
                        [n for n, _, _ in s if n == DURATION_COUNT])    # one series per duration series
        # readers at the same time (Prometheus on :15020 and :15090, a user): each one's count still exact
        for _ in range(5):
            await get_ratings_ok(http)
        sent += 5
        at_once = await asyncio.gather(*(scrape(a, port) for a in (client, server) for port in (
            STATS_PORT, MERGED_STATS_PORT, STATS_PORT)))
        for i, s in enumerate(at_once):
            a, rep = (client, "source") if i < 3 else (server, "destination")
            assert total(s, REQ, reporter=rep) - base[a][0] == sent, (rep, i)
    # Envoy itself holds no istio_requests_total counter, only the counted histogram
    stats = await server.admin_get("/stats?filter=istiocustom")
    assert COUNTED_DURATION in stats and "istio_requests_total" not in stats
    # Envoy's own stats still update (each scrape flushes them)
    await asyncio.sleep(1.1)
    assert total(await scrape(server), "envoy_server_uptime") > uptime0


async def test_requests_total_is_a_counter_when_the_duration_is_disabled(mesh: Mesh) -> None:
    client, server = await ratings_and_client(mesh, NS, "reviews-v2-5d8c9f7b4-q7r2t")
    await mesh.apply_yaml(NO_DURATION)
    await mesh.wait_synced()
    async with mesh.client_via(client) as http:
        async def counted_without_duration() -> None:
            before = [await scrape(a) for a in (client, server)]
            await get_ratings_ok(http)
            await asyncio.sleep(0.1)        # the access log runs as the stream ends
            after = [await scrape(a) for a in (client, server)]
            for b, a, rep in zip(before, after, ("source", "destination"), strict=True):
                assert total(a, REQ, reporter=rep) - total(b, REQ, reporter=rep) == 1, rep
                assert not [n for n, _, _ in a if n.startswith("istio_request_duration")], rep
        await eventually(counted_without_duration, timeout=15, interval=0.5)
    assert "istiocustom.istio_requests_total" in await server.admin_get("/stats?filter=istiocustom")


def test_counted_family_renamed_added_up_and_typed_once() -> None:
    """The agent's rewrite: the counted histogram becomes Istio's duration (merged with a real duration
    family where one coincides) and its counts become istio_requests_total (added to a real counter's)."""
    text = "\n".join([
        "# TYPE istio_request_duration_milliseconds histogram",
        'istio_request_duration_milliseconds_bucket{reporter="source",le="+Inf"} 2',
        'istio_request_duration_milliseconds_sum{reporter="source"} 3.5',
        'istio_request_duration_milliseconds_count{reporter="source"} 2',
        f"# TYPE {COUNTED_DURATION} histogram",
        f'{COUNTED_DURATION}_bucket{{reporter="destination",le="+Inf"}} 5',
        f'{COUNTED_DURATION}_sum{{reporter="destination"}} 7',
        f'{COUNTED_DURATION}_count{{reporter="destination"}} 5',
        f'{COUNTED_DURATION}_count{{reporter="source"}} 1',
        "# TYPE istio_requests_total counter",
        'istio_requests_total{reporter="source"} 2',
        "# TYPE envoy_server_live gauge",
        "envoy_server_live 1",
        "",
    ])
    out = prometheus.with_request_count(text)
    assert out.count("# TYPE istio_request_duration_milliseconds histogram") == 1
    assert out.count("# TYPE istio_requests_total counter") == 1
    assert COUNTED_DURATION not in out
    samples = parse(out)
    assert total(samples, REQ, reporter="destination") == 5
    assert total(samples, REQ, reporter="source") == 3          # the real counter's 2 and the derived 1
    assert total(samples, DURATION_COUNT, reporter="source") == 3
    assert total(samples, "istio_request_duration_milliseconds_sum", reporter="destination") == 7
    assert total(samples, "envoy_server_live") == 1
    # each family's lines together, under its one TYPE line
    lines = out.splitlines()
    req_at = [i for i, line in enumerate(lines) if line.startswith(REQ)]
    assert req_at == list(range(req_at[0], req_at[0] + len(req_at)))
    assert lines[req_at[0] - 1] == "# TYPE istio_requests_total counter"
    assert prometheus.with_request_count("envoy_server_live 1\n") == "envoy_server_live 1\n"
