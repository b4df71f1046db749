"""The control plane's admission HTTPS server (istiod's ``:15017``): a table of handlers by path
(``/validate``: :class:`~.validation.ValidationHandler`; ``/inject``: the sidecar injector, added with
:meth:`AdmissionServer.route` by whoever provides it), each a pure ``AdmissionRequest -> AdmissionResponse``
function (:mod:`.review`) run off the event loop.

Requests: ``POST`` with an AdmissionReview JSON body of at most ``MAX_BODY`` bytes read within
``body_timeout_s`` (413 / 408 otherwise), a handler answering within ``handler_timeout_s`` (500 otherwise,
so the API server applies the webhook's ``failurePolicy``); a bad body is 400 (415 for a non-JSON content
type) with one line; an unknown path 404. Nothing here prints a traceback to the client.

TLS: the serving certificate is the mesh CA's, for istiod's names (:mod:`mizzen.security.serving`, the same
class as the secure xDS port's), renewed at half its life or when the CA's roots change: every handshake
checks, and a renewed certificate serves the next connections. Its key stays in memory (an anonymous
memfd hands it to OpenSSL, never a file on disk). The API server verifies it against the ``caBundle`` the
webhook patcher writes (:mod:`.patcher`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import ssl
from collections.abc import Mapping

from aiohttp import web

from mizzen.kube.webhooks.review import Handler, ReviewError, decode_review, review_response
from mizzen.security.serving import ServingCertificate, ServingPair

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_WEBHOOK_PORT", "MAX_BODY", "AdmissionServer", "webhook_dns_names"]

DEFAULT_WEBHOOK_PORT = 15017
# an AdmissionReview holds the object and the old object (the API server's limit is 3 MiB per object)
MAX_BODY = 8 << 20


def webhook_dns_names(namespace: str = "istio-system", revision: str = "",
                      extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The names the API server may dial the webhook by: ``istiod.<ns>.svc`` (and ``istiod-<rev>`` for a
    named revision), their long forms, and ``extra`` (e.g. the address of a ``url:`` client config)."""
    services = ["istiod"] + ([f"istiod-{revision}"] if revision not in ("", "default") else [])
    names = [f"{s}.{namespace}.{suffix}" for s in services for suffix in ("svc", "svc.cluster.local")]
    names += [f"{s}.{namespace}" for s in services]
    if namespace != "istio-system":
        names.append("istiod.istio-system.svc")
    return tuple(dict.fromkeys([*names, *extra]))


def _tls_context(pair: ServingPair) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    fd = os.memfd_create("mizzen-webhook-serving", os.MFD_CLOEXEC)   # the key never touches a disk
    try:
        os.write(fd, pair.chain_pem.encode() + pair.key_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return ctx


def _one_line(text: str) -> str:
    return " ".join(text.split())


class AdmissionServer:
    """``await server.start(host, port)``; ``server.port``; ``await server.stop()``."""

    def __init__(self, serving: ServingCertificate, handlers: Mapping[str, Handler] | None = None, *,
                 body_timeout_s: float = 10.0, handler_timeout_s: float = 8.0,
                 max_body: int = MAX_BODY) -> None:
        self.serving = serving
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.body_timeout_s = body_timeout_s
        self.handler_timeout_s = handler_timeout_s
        self.max_body = max_body
        self.served = 0
        self._pair = serving.current
        self._current = _tls_context(self._pair)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    def route(self, path: str, handler: Handler) -> None:
        """Serve ``handler`` on ``path`` (also once started)."""
        self.handlers[path] = handler

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("admission server not started")
        return self._port

    # -- TLS
    def _context(self) -> ssl.SSLContext:
        try:
            self.serving.renew_if_due()
        except Exception as e:   # keep serving the current certificate; the next handshake tries again
            log.warning("webhook serving certificate renewal failed (%s); keeping serial %s", e,
                        self._pair.leaf.serial)
        pair = self.serving.current
        if pair is not self._pair:
            self._current, self._pair = _tls_context(pair), pair
        return self._current

    def _on_hello(self, sock: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
        sock.context = self._context()   # called for every ClientHello, with SNI or without

    def ssl_context(self) -> ssl.SSLContext:
        base = _tls_context(self._pair)
        base.sni_callback = self._on_hello
        return base

    # -- HTTP
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        handler = self.handlers.get(request.path)
        if handler is None:
            return web.Response(status=404, text=f"no admission handler at {request.path}\n")
        if request.method != "POST":
            return web.Response(status=405, text="want POST with an AdmissionReview\n",
                                headers={"Allow": "POST"})
        length = request.content_length
        if length is not None and length > self.max_body:
            return self._close(web.Response(status=413, text=f"body of {length} bytes is larger than "
                                                             f"{self.max_body}\n"))
        try:
            body = await asyncio.wait_for(request.read(), self.body_timeout_s)
        except web.HTTPRequestEntityTooLarge:
            return self._close(web.Response(status=413, text=f"body larger than {self.max_body} bytes\n"))
        except TimeoutError:
            return self._close(web.Response(status=408, text=f"body not received within "
                                                             f"{self.body_timeout_s:g} s\n"))
        try:
            api_version, review = decode_review(body, request.headers.get("Content-Type", ""))
        except ReviewError as e:
            return web.Response(status=e.status, text=_one_line(e.message) + "\n")
        try:
            answer = await asyncio.wait_for(asyncio.to_thread(handler, review), self.handler_timeout_s)
        except TimeoutError:
            log.warning("admission %s: no answer within %g s (uid %s)", request.path, self.handler_timeout_s,
                        review.get("uid"))
            return web.Response(status=500, text=f"no answer within {self.handler_timeout_s:g} s\n")
        except Exception as e:
            log.exception("admission handler %s failed", request.path)
            return web.Response(status=500, text=_one_line(f"internal error: {type(e).__name__}: {e}") + "\n")
        self.served += 1
        return web.json_response(review_response(api_version, review, answer))

    @staticmethod
    def _close(resp: web.Response) -> web.Response:
        resp.force_close()   # the rest of the body is not read
        return resp

    async def start(self, host: str, port: int) -> None:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, lingering_time=1.0)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, host, port, ssl_context=self.ssl_context(), reuse_address=True)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        self._port = next((int(a[1]) for a in runner.addresses if isinstance(a, tuple) and len(a) >= 2), port)
        log.info("admission webhooks on https://%s:%d (%s)", host, self._port,
                 ", ".join(sorted(self.handlers)))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._port = None


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
