"""The agent's metrics endpoints (pilot-agent's): Istio's merged ``<pod ip>:15020/stats/prometheus`` (Envoy's
stats with Istio's names, then the app's own metrics when it is annotated ``prometheus.io/scrape``) and a Unix
socket in the work dir serving Envoy's stats with Istio's names, which Envoy's static ``prometheus_stats``
listener on ``:15090`` routes to (see :mod:`mizzen.agent.bootstrap`). Scrapes only: no request path.

Both take Envoy's query parameters, ``filter=`` with Istio's names (:mod:`mizzen.telemetry.stats_filter`);
each scrape waits for a fresh merge of Envoy's histograms only while Envoy holds the counted duration
histogram (:func:`merged_histograms`); one HTTP session each to Envoy's admin socket and to the app's
metrics port is kept from the first scrape to :meth:`MetricsServer.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import aiohttp
from aiohttp import web

from mizzen.telemetry.metrics import COUNTED_DURATION, STAT_NAMESPACE, Metric
from mizzen.telemetry.peer_address import AddressMap
from mizzen.telemetry.prometheus import AppScrape, istio_names, merge
from mizzen.telemetry.stats_filter import COUNTED_STAT, BadFilter, filter_families, stats_filter

log = logging.getLogger(__name__)

__all__ = ["MERGED_STATS_PORT", "STATS_SOCKET_NAME", "MetricsServer"]

MERGED_STATS_PORT = 15020         # Istio's pilot-agent merged metrics port
STATS_SOCKET_NAME = "stats.sock"
PATH = "/stats/prometheus"
TEXT = "text/plain; version=0.0.4"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# Envoy (bootstrap ``stats_flush_on_admin``) starts a stats flush, whose first step merges every worker's
# histograms asynchronously, on each admin stats request, and counts the request in this counter instead when
# a flush is still under way
_DROPPED = "server.dropped_stat_flushes"
_PROBE = f"http://localhost/stats?filter=^{re.escape(_DROPPED)}$"
REQUESTS = Metric.REQUEST_COUNT.value
REAL_REQUESTS = rf"^{STAT_NAMESPACE}\.{REQUESTS}(?:\.|$)"     # a real counter (the duration disabled)
_PROBES = 40                      # at most, ~1-2 ms each; 3 when nothing else reads Envoy's stats


async def merged_histograms(session: aiohttp.ClientSession) -> bool:
    """Waits until Envoy merged its workers' histograms after this call began, so that the text read next
    counts every request that completed before (what makes the duration histogram's ``_count`` an exact
    ``istio_requests_total``: :func:`mizzen.telemetry.prometheus.with_request_count`). Each probe is an admin
    stats request: it starts a flush, or counts a dropped one when a flush is under way (Envoy runs one at a
    time). A probe after the first whose count did not grow started a flush; a second such probe means that
    flush finished. False when that was not seen within the probes (other readers kept Envoy flushing, or the
    counter is not there): the text is then as fresh as Envoy's last merge."""
    last, started, delay = -1, 0, 0.0005
    for _ in range(_PROBES):
        async with session.get(_PROBE) as r:
            r.raise_for_status()
            m = re.search(r"^server\.dropped_stat_flushes: (\d+)$", await r.text(), re.M)
        if m is None:
            return False
        n = int(m[1])
        if n == last:
            started += 1
            if started == 2:
                return True
        elif last >= 0:
            await asyncio.sleep(delay)      # a flush was under way: give it time
            delay = min(delay * 2, 0.02)
        last = n
    log.debug("Envoy's histograms were not seen merged after %d probes", _PROBES)
    return False


class EnvoyRefused(Exception):
    """Envoy answered 400 to the query's parameters (its reason)."""


class MetricsServer:
    def __init__(self, admin_socket: str, stats_socket: Path, host: str, port: int | None,
                 app: AppScrape | None = None, app_host: str = "127.0.0.1", timeout_s: float = 5.0,
                 socket_owner: tuple[int, int] | None = None,
                 extra_routes: Sequence[tuple[str, Handler]] = (), peers: AddressMap | None = None) -> None:
        """``extra_routes``: more GET routes on the TCP port (pilot-agent's ``/app-health/...`` on 15020);
        ``peers``: the control plane's address-to-workload map for TCP source labels (None: none to ask)."""
        self.peers = peers or AddressMap(None)
        self.admin_socket, self.stats_socket = admin_socket, stats_socket
        self.extra_routes = tuple(extra_routes)
        self.host, self.port, self.app, self.app_host = host, port, app, app_host
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.socket_owner = socket_owner
        self._runners: list[web.AppRunner] = []
        # one HTTP session each to Envoy's admin socket and to the app's metrics port, kept (connections
        # reused) from the first scrape to stop()
        self._admin: aiohttp.ClientSession | None = None
        self._app: aiohttp.ClientSession | None = None
        # Envoy holds the counted duration histogram (seen in its stats): only then can a scrape's counts
        # depend on a fresh merge (merged_histograms); a proxy without Istio's HTTP metrics never probes
        self._counted = False

    def _admin_session(self) -> aiohttp.ClientSession:
        if self._admin is None:
            self._admin = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.admin_socket),
                                                timeout=self.timeout)
        return self._admin

    def _app_session(self) -> aiohttp.ClientSession:
        if self._app is None:
            self._app = aiohttp.ClientSession(timeout=self.timeout, trust_env=False)
        return self._app

    async def _read(self, query: Mapping[str, str]) -> str:
        """Envoy's ``/stats/prometheus`` text; :class:`EnvoyRefused` with Envoy's reason on a 400."""
        for attempt in range(2):
            try:
                async with self._admin_session().get(f"http://localhost{PATH}", params=query) as r:
                    if r.status == 400:
                        raise EnvoyRefused(" ".join((await r.text()).split())[:200])
                    r.raise_for_status()
                    return await r.text()
            except aiohttp.ServerDisconnectedError:
                if attempt:          # once more on a new connection: a kept one may have just been closed
                    raise
        raise AssertionError("unreachable")

    async def envoy_stats(self, query: Mapping[str, str]) -> str:
        """Envoy's stats with Istio's names; ``query``: Envoy's parameters (``usedonly``, ``text_readouts``,
        ``histogram_buckets``, ...), ``filter=`` with Istio's names (:mod:`mizzen.telemetry.stats_filter`,
        :class:`BadFilter`)."""
        flt = stats_filter(query["filter"]) if "filter" in query else None
        q = dict(query) | ({"filter": flt.envoy} if flt is not None else {})
        derived = flt is None or bool(flt.derived)      # the text can hold derived counts
        # ``usedonly`` hides a histogram never merged: absent from the text then proves nothing
        unsure = "usedonly" in query or "type" in query
        probed = derived and (self._counted or unsure)
        if probed:
            await merged_histograms(self._admin_session())
        text = await self._read(q)
        if COUNTED_DURATION in text:
            self._counted = True
            if derived and not probed:
                # the first scrape since Envoy made the histogram: its counts must be merged ones too
                await merged_histograms(self._admin_session())
                text = await self._read(q)
        elif probed and not unsure:
            self._counted = False        # gone (its listeners were removed, or a Telemetry disabled it)
        counted = COUNTED_DURATION in text
        text = istio_names(text)
        if flt is not None:
            text = flt.renamed(text)
        summary = query.get("histogram_buckets") == "summary"
        if counted and summary and (flt is None or REQUESTS in flt.derived):
            # Envoy's summaries are of the last flush's interval: the requests' cumulative counts come from
            # the histogram as Envoy renders it by default (the same merge)
            counts = istio_names(await self._read({"filter": f"{REAL_REQUESTS}|{COUNTED_STAT}"}))
            text = merge(filter_families(text, lambda f: f != REQUESTS),
                         filter_families(counts, lambda f: f == REQUESTS))
        return await self.peers.expand(text)

    async def app_stats(self) -> str:
        if self.app is None:
            return ""
        url = f"http://{self.app_host}:{self.app.port}{self.app.path}"
        for attempt in range(2):
            try:
                async with self._app_session().get(url) as r:
                    if r.status != 200:
                        return ""
                    return await r.text()
            except aiohttp.ServerDisconnectedError:
                if attempt:
                    return ""
            except (TimeoutError, aiohttp.ClientError, OSError):
                return ""      # Istio's merge skips an app that does not answer
        return ""

    async def _envoy_only(self, request: web.Request) -> web.Response:
        return await self._respond(request, merged=False)

    async def _merged(self, request: web.Request) -> web.Response:
        return await self._respond(request, merged=True)

    async def _respond(self, request: web.Request, merged: bool) -> web.Response:
        query = dict(request.query)
        try:
            flt = stats_filter(query["filter"]) if "filter" in query else None    # before any read
            if merged:
                envoy, app = await asyncio.gather(self.envoy_stats(query), self.app_stats())
                if flt is not None and app:
                    app = filter_families(app, flt.matches)     # the app's families by their names
                text = merge(envoy, app)
            else:
                text = await self.envoy_stats(query)
        except (BadFilter, EnvoyRefused) as e:
            return web.Response(status=400, text=f"{e}\n")
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return web.Response(status=503, text=f"Envoy's stats are unavailable: {type(e).__name__}\n")
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def start(self) -> None:
        try:
            unix = web.Application()
            unix.router.add_get(PATH, self._envoy_only)
            r = web.AppRunner(unix, access_log=None, handle_signals=False)
            await r.setup()
            self._runners.append(r)
            with contextlib.suppress(FileNotFoundError):
                self.stats_socket.unlink()
            await web.UnixSite(r, str(self.stats_socket)).start()
            self.stats_socket.chmod(0o600)
            if self.socket_owner is not None and os.geteuid() == 0:
                # Envoy runs as the proxy user (netns pods): the socket is that user's, like the work dir
                os.chown(self.stats_socket, *self.socket_owner)
            if self.port is not None:
                tcp = web.Application()
                tcp.router.add_get(PATH, self._merged)
                for path, handler in self.extra_routes:
                    tcp.router.add_get(path, handler)
                r2 = web.AppRunner(tcp, access_log=None, handle_signals=False)
                await r2.setup()
                self._runners.append(r2)
                try:
                    await web.TCPSite(r2, self.host, self.port, reuse_address=True).start()
                except OSError as e:
                    # the pod IP lives in another network namespace (the proxy runs in the pod's): Envoy's
                    # :15090 still serves Istio's names through the socket
                    log.warning("merged metrics on %s:%d unavailable: %s", self.host, self.port,
                                e.strerror or e)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for r in reversed(self._runners):
            await r.cleanup()
        self._runners.clear()
        for session in (self._admin, self._app):
            if session is not None:
                await session.close()
        self._admin = self._app = None
        with contextlib.suppress(OSError):
            self.stats_socket.unlink()        # leave nothing behind in the work dir
