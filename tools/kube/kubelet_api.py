"""The node agent's kubelet API, the part the API server calls for ``kubectl logs``: ``GET
/containerLogs/<namespace>/<pod>/<container>`` over HTTPS, as a kubelet serves it on its port (10250).

* **Where**: the node's InternalIP (the node agent's address on the cluster's bridge), on a free port that the
  Node's ``status.daemonEndpoints.kubeletEndpoint.Port`` announces (the API server dials that port), so
  several clusters' nodes never collide on 10250.
* **TLS**: a serving certificate for the node's IP signed by the cluster's CA, which the API server verifies
  (``--kubelet-certificate-authority``, as a cluster with ``serverTLSBootstrap`` does).
* **Who may call**: a client certificate signed by the cluster's CA is required (``--kubelet-client-
  certificate``); of those, only the API server's (:data:`API_SERVER_CLIENT_CN`), as a kubelet's
  authorizer would allow ``nodes/log`` and ``nodes/proxy`` to it alone. Anything else is a 403.
* **What**: the container's output as the node agent records it (``<pod dir>/logs/<container>.log``, stdout
  and stderr, kept across restarts in one file), with ``tailLines``, ``limitBytes`` and ``follow`` (new
  output streamed until the client goes or the pod is stopped, at most :data:`FOLLOW_MAX_S`). ``previous``
  is refused as a kubelet refuses it when there is no previous instance's log: this node agent keeps one
  log per container, not one per instance. ``timestamps`` and ``sinceSeconds``/``sinceTime`` are not
  supported (the node agent does not record times per line): a 400 says so.

This module is loaded by path beside ``nodeagent.py`` (``runpy``), so it defines no dataclasses and imports
nothing from there: :func:`serve` takes the node agent itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

log = logging.getLogger("mizzen.nodeagent.kubelet")

API_SERVER_CLIENT_CN = "kube-apiserver-kubelet-client"   # testcluster's --kubelet-client-certificate
FOLLOW_POLL_S = 0.2
FOLLOW_MAX_S = 3600.0
READ_MAX_BYTES = 16 * 1024 * 1024


def _peer_cn(request: web.Request) -> str | None:
    transport = request.transport
    ssl_obj = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
    if not der:
        return None
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _error(status: int, message: str) -> web.Response:
    # the kubelet answers errors as text; the API server passes them on to kubectl
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


def _tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class KubeletApi:
    """The routes over ``agent`` (a running :class:`NodeAgent`)."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._authorize])
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        app.router.add_get("/healthz", self.healthz)
        return app

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Any) -> web.StreamResponse:
        cn = _peer_cn(request)
        if cn != API_SERVER_CLIENT_CN:
            return _error(403, f"Forbidden (user={cn or 'anonymous'}, verb=get, resource=nodes, "
                               "subresource=log)")
        response: web.StreamResponse = await handler(request)
        return response

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        ns, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        q = request.query
        run = self.agent.pod_by_name(ns, pod)
        if run is None:
            return _error(404, f'pod "{pod}" in namespace "{ns}" is not running on node {self.agent.name}')
        names = [str(c.get("name")) for c in ((run.pod.get("spec") or {}).get("containers") or [])
                 + ((run.pod.get("spec") or {}).get("initContainers") or [])]
        if container not in names:
            return _error(400, f'container {container} is not valid for pod {pod}')
        if q.get("previous", "false").lower() == "true":
            return _error(400, f'previous terminated container "{container}" in pod "{pod}" not found '
                               "(this node agent keeps one log per container)")
        for unsupported in ("timestamps", "sinceSeconds", "sinceTime"):
            if unsupported in q and q[unsupported].lower() not in ("false", ""):
                return _error(400, f"{unsupported} is not supported by this node agent")
        try:
            tail = int(q["tailLines"]) if "tailLines" in q else None
            limit = int(q["limitBytes"]) if "limitBytes" in q else None
        except ValueError:
            return _error(400, "tailLines and limitBytes are integers")
        path = Path(run.dir) / "logs" / f"{container}.log"
        data, offset = await asyncio.to_thread(self._read, path, 0)
        if tail is not None:
            data = _tail(data, tail)
        if limit is not None:
            data = data[:max(limit, 0)]
        follow = q.get("follow", "false").lower() == "true"
        if not follow:
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        sent = len(data)
        if data:
            await resp.write(data)
        deadline = time.monotonic() + FOLLOW_MAX_S
        while time.monotonic() < deadline and (limit is None or sent < limit):
            if self.agent.pod_by_name(ns, pod) is not run or request.transport is None \
                    or request.transport.is_closing():
                break
            await asyncio.sleep(FOLLOW_POLL_S)
            more, offset = await asyncio.to_thread(self._read, path, offset)
            if more:
                if limit is not None:
                    more = more[:limit - sent]
                sent += len(more)
                try:
                    await resp.write(more)
                except (ConnectionResetError, RuntimeError):
                    break
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await resp.write_eof()
        return resp

    @staticmethod
    def _read(path: Path, offset: int) -> tuple[bytes, int]:
        """The bytes after ``offset`` (whole lines only while the file grows), and the next offset."""
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                if offset > size:      # truncated: start over
                    offset = 0
                start = max(offset, size - READ_MAX_BYTES)
                f.seek(start)
                data = f.read(size - start)
        except FileNotFoundError:
            return b"", offset
        return data, start + len(data)


async def serve(agent: Any) -> None:
    """Serve the kubelet API on the node's address until cancelled; the Node's status names the port."""
    pki = agent.cluster.pki
    crt, key = await asyncio.to_thread(pki.issue, f"kubelet-{agent.name}", f"system:node:{agent.name}",
                                       "system:nodes", server=True, dns=(agent.name,), ips=(agent.host_ip,))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.root / "ca.crt"))
    ctx.load_cert_chain(str(crt), str(key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    runner = web.AppRunner(KubeletApi(agent).app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, agent.host_ip, 0, ssl_context=ctx)
    await site.start()
    try:
        server = site._server
        port = int(server.sockets[0].getsockname()[1]) if server is not None and server.sockets else 0
        await agent._call("PATCH", f"/api/v1/nodes/{agent.name}/status",
                          {"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}},
                          "application/merge-patch+json")
        agent.kubelet_port = port
        log.info("node %s: kubelet API on https://%s:%d", agent.name, agent.host_ip, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        for p in (crt, key):
            with contextlib.suppress(OSError):
                p.unlink()
