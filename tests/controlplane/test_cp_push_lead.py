"""An isolated change is pushed on the event loop's next turn, with the control plane's default debounce:
the API's apply (``store.apply_async``, the journal record written on the journal thread) goes live, and
the push starts without the loop sleeping on a timer first (a sleeping loop hands the CPUs to the proxies
and waits for one to wake up: bench/README.md; that a change right after a push is still debounced is
tests/xds/test_xds_debounce.py's, with lead 0 too). And over HTTP, the apply's answer (its analysis
warnings, computed on the loop) waits for that push to generate every proxy instead of holding the loop in
the middle of it. No timings judged: turns of the loop and the order of events are."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Collection
from pathlib import Path
from urllib.parse import urlsplit

from mizzen.config.loader import load_text
from mizzen.config.model import Config
from mizzen.controlplane import push as push_module
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.proxy import Meta, Proxy, ProxyType, node_id
from mizzen.core.push_context import PushContext
from mizzen.xds.resources import ResourceSet

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: bookinfo}}
spec:
  hosts: [reviews]
  http:
  - route:
    - {{destination: {{host: reviews, subset: v1}}, weight: {w}}}
    - {{destination: {{host: reviews, subset: v2}}, weight: {rest}}}
"""


def change(w: int) -> list[Config]:
    result = load_text(VS.format(w=w, rest=100 - w), "vs.yaml")
    assert not result.errors, result.errors
    return list(result.configs)


async def turns_until_pushed(cp: ControlPlane, pushes: int, most: int = 3) -> int | None:
    """Turns of the loop (``sleep(0)``) until the push count passes ``pushes`` (None: not within ``most``)."""
    for turn in range(1, most + 1):
        await asyncio.sleep(0)
        if cp.pusher.stats.pushes > pushes:
            return turn
    return None


async def test_an_isolated_apply_is_pushed_on_the_next_turn(tmp_path: Path) -> None:
    options = ControlPlaneOptions(state_dir=tmp_path / "state", xds_port=0, http_port=None)
    cp = ControlPlane(options)
    await cp.start()
    try:
        await cp.store.apply_async(change(10))
        await cp.flush()
        await asyncio.sleep(options.debounce_quiet_s * 1.5)   # quiet: the next change is isolated
        pushes = cp.pusher.stats.pushes
        await cp.store.apply_async(change(20))   # returns once the journal record is durable and it is live
        assert await turns_until_pushed(cp, pushes) is not None, "the push waited for a timer"
        assert cp.pusher.stats.reasons == ["config VirtualService/bookinfo/reviews configured"]
    finally:
        await cp.stop()


def answered(sock: socket.socket) -> bool:
    """Whether the server has written (any of) its answer to this client socket, without reading it."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


async def test_the_api_answers_an_apply_after_the_push_it_started(tmp_path: Path) -> None:
    client: socket.socket | None = None
    # per proxy generated: whether the apply's answer had been written by then
    log: list[tuple[str, bool]] = []

    def generator(proxy: Proxy, _push: PushContext, _types: Collection[str] | None) -> ResourceSet:
        log.append((proxy.id, client is not None and answered(client)))
        return ResourceSet({})

    options = ControlPlaneOptions(state_dir=tmp_path / "state", xds_port=0, http_port=0)
    cp = ControlPlane(options, generator=generator)
    await cp.start()
    try:
        proxies = 5 * push_module.YIELD_EVERY   # the push yields to the loop at least four times
        for i in range(proxies):
            name = f"app-{i}"
            ip = f"10.9.{1 + i // 200}.{1 + i % 200}"
            cp.pusher.connect(node_id(ProxyType.SIDECAR, ip, name, "default"),
                              {Meta.NAMESPACE: "default", Meta.WORKLOAD_NAME: name})
        await cp.store.apply_async(change(10))
        await cp.flush()
        await asyncio.sleep(options.debounce_quiet_s * 1.5)   # quiet: the apply below is pushed at once
        log.clear()
        body = json.dumps({"documents": [{"file": "vs.yaml", "text": VS.format(w=20, rest=80)}]}).encode()
        url = urlsplit(cp.http_url)
        assert url.hostname is not None and url.port is not None
        client = socket.create_connection((url.hostname, url.port))
        client.sendall(b"POST /apis/apply HTTP/1.1\r\nHost: " + url.netloc.encode() + b"\r\n"
                       b"Content-Type: application/json\r\n"
                       b"Authorization: Bearer " + (cp.token or "").encode() + b"\r\nConnection: close\r\n"
                       b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        async with asyncio.timeout(10):
            while not answered(client):
                await asyncio.sleep(0.005)
        assert b" 200 " in client.recv(100).split(b"\r\n")[0]
        assert len(log) == proxies, log   # the apply's push, every proxy generated once
        late = [node for node, after_answer in log if after_answer]
        assert not late, f"{len(late)} of {proxies} proxies were generated after the apply was answered"
    finally:
        if client is not None:
            client.close()
        await cp.stop()
