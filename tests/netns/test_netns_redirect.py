"""Istio's iptables interception (INTERCEPTION_MODE=REDIRECT) end to end, as root: three pod-like network
namespaces on a host bridge, istio-init's rules (mizzen.agent.iptables) in each, a real Envoy sidecar per pod
running as uid 1337 and fed by the in-process control plane. A plain client in pod ``a`` calls the Service's
cluster IP; its sidecar captures the call (15001), routes it by VirtualService to subset v1/v2, and the
server pod's sidecar captures it inbound (15006) and hands it to the app on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from netns_lib import NetnsAgent, Pod, PodNet, as_user, netns_unavailable_reason

from mizzen.agent.bootstrap import AGENT_ADMIN_PORT, ProxySpec
from mizzen.agent.envoy import AgentOptions
from mizzen.agent.iptables import PROXY_UID, CaptureConfig, render_restore
from mizzen.config.errors import ConfigError
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.proxy import ProxyType
from mizzen.registry.model import Workload

_REASON = netns_unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

NS = "mzt"
ADMIN_PORT = AGENT_ADMIN_PORT       # the agent's admin proxy; Envoy's admin is a socket in the work dir
APP_PORT = 9080
HOST = f"echo.{NS}.svc.cluster.local"
CAPTURED = f"http.outbound_0.0.0.0_{APP_PORT}.downstream_rq_total"   # HCM of a's 0.0.0.0_9080 listener

# a tiny app: answers JSON naming its pod, the peer address it saw and the request headers
SERVER = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"pod": sys.argv[1], "peer": self.client_address[0],
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
ThreadingHTTPServer(("0.0.0.0", int(sys.argv[2])), H).serve_forever()
"""


def mesh_yaml(vip: str) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  clusterIP: {vip}
  selector: {{app: echo}}
  ports: [{{name: http, port: {APP_PORT}, targetPort: {APP_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec:
  host: echo
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [echo]
  http:
  - match: [{{headers: {{x-version: {{exact: v2}}}}}}]
    route: [{{destination: {{host: echo, subset: v2}}}}]
    headers: {{response: {{add: {{x-mizzen-route: v2}}}}}}
  - route: [{{destination: {{host: echo, subset: v1}}}}]
    headers: {{response: {{add: {{x-mizzen-route: v1}}}}}}
"""


FAULT_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: echo, subset: v1}}]
"""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class World:
    net: PodNet
    cp: ControlPlane
    client: Pod
    servers: dict[str, Pod]
    agents: dict[str, NetnsAgent]
    vip: str

    async def apply(self, text: str) -> None:
        result = self.cp.api.loader(text, "netns.yaml", NS)
        if result.errors:
            raise ConfigError(list(result.errors))
        self.cp.store.apply(result.configs)
        await self.cp.wait_synced(timeout=10)

    async def curl(self, url: str, *, headers: dict[str, str] | None = None, uid: int | None = None,
                   pod: Pod | None = None) -> Reply:
        """curl in ``pod`` (default: the client pod) as root, or as ``uid``."""
        argv = ["curl", "-s", "-i", "--max-time", "5"]
        for k, v in (headers or {}).items():
            argv += ["-H", f"{k}: {v}"]
        prefix = as_user(uid) if uid is not None else []
        rc, out = await self.net.run(pod or self.client, [*prefix, *argv, url], timeout=10)
        assert rc == 0, f"curl {url} exited {rc}: {out!r}"
        head, _, body = out.replace("\r\n", "\n").partition("\n\n")
        status_line, *lines = head.split("\n")
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        return Reply(int(status_line.split()[1]), {k.strip().lower(): v.strip() for k, v in fields.items()},
                     body)

    async def stat(self, pod: str, name: str) -> int:
        """One counter from the sidecar admin of ``pod`` (its Unix socket; 0 when Envoy has not created it
        yet)."""
        query = urllib.parse.urlencode({"filter": f"^{_re(name)}$"})
        text = await self.agents[pod].admin_get(f"/stats?{query}")
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0


def _re(s: str) -> str:
    return "".join("\\" + c if c in ".|^$()[]{}*+?\\" else c for c in s)


def _work_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="mzt-netns-"))
    d.chmod(0o755)            # the proxy user reads the bootstrap and writes its log below
    return d


@pytest.fixture
async def world() -> AsyncIterator[World]:
    work = _work_dir()
    cp: ControlPlane | None = None
    agents: dict[str, NetnsAgent] = {}
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        net = cleanup.enter_context(PodNet(work))
        try:
            client = net.add_pod("a")
            servers = {v: net.add_pod(f"b{v[1:]}") for v in ("v1", "v2")}
            # the client pod gets its rules like istio-init (the module's command line, applying them itself),
            # the servers from the library's iptables-restore text: both paths must yield working rules
            excluded = ",".join(map(str, CaptureConfig.for_sidecar(ADMIN_PORT).exclude_inbound_ports))
            rc, out = await net.run(client, [sys.executable, "-m", "mizzen.agent.iptables", "-d", excluded,
                                             "--apply"])
            assert rc == 0, out
            for pod in (client, *servers.values()):
                if pod is not client:
                    net.apply_iptables(pod, render_restore(CaptureConfig.for_sidecar(ADMIN_PORT)))
                rules = net.nat_rules(pod)
                assert f"-A ISTIO_OUTPUT -m owner --uid-owner {PROXY_UID} -j RETURN" in rules
                assert f"-A ISTIO_INBOUND -p tcp -m multiport --dports {excluded} -j RETURN" in rules
            for pod in servers.values():
                await net.start(pod, [sys.executable, "-c", SERVER, pod.name,
                                      str(APP_PORT)], work / f"{pod.name}.app.log")
            cp = ControlPlane(ControlPlaneOptions(state_dir=None, xds_host=net.host_ip, xds_port=0,
                                                  http_port=None, debounce_quiet_s=0.05, debounce_max_s=0.5,
                                                  restore_workloads=False))
            await cp.start()
            labels = {"a": {"app": "sleep", "version": "v1"},
                      **{pod.name: {"app": "echo", "version": v} for v, pod in servers.items()}}
            for pod in (client, *servers.values()):
                cp.register_workload(Workload(name=pod.name, namespace=NS, address=pod.ip,
                                              labels=labels[pod.name]))
                pod_dir = work / pod.name
                pod_dir.mkdir()
                os.chown(pod_dir, PROXY_UID, PROXY_UID)
                spec = ProxySpec(type=ProxyType.SIDECAR, ip=pod.ip, namespace=NS, name=pod.name,
                                 admin_port=ADMIN_PORT, xds_host=net.host_ip, xds_port=cp.xds_port,
                                 labels=labels[pod.name], interception_mode="REDIRECT", http_proxy_port=0)
                agents[pod.name] = NetnsAgent(spec, pod, AgentOptions(work_dir=pod_dir, concurrency=1))
            await asyncio.gather(*(a.start(ready_timeout=20) for a in agents.values()))
            # the cluster IP is an unassigned address of the test's own subnet (not 10.96/12): were the
            # capture broken, the client's packets would find no host there rather than leave the machine
            w = World(net, cp, client, servers, agents, vip=f"{net.subnet}.250")
            await w.apply(mesh_yaml(w.vip))
            yield w
        finally:
            await asyncio.gather(*(a.stop() for a in agents.values()), return_exceptions=True)
            if cp is not None:
                await cp.stop()
            await net.stop_processes()


async def _first_reply(w: World, url: str, headers: dict[str, str], timeout: float = 10.0) -> Reply:
    """The first call after a push: retried (bounded) until the listeners are warm and the route answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = await w.curl(url, headers=headers)
            if (r.status == 200 and "x-mizzen-route" in r.headers) or time.monotonic() >= deadline:
                return r
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(0.2)


async def test_netns_redirect_capture_routes_through_both_sidecars(world: World) -> None:
    w = world
    url = f"http://{w.vip}:{APP_PORT}/hello"
    v2 = w.servers["v2"].name
    r = await _first_reply(w, url, {"x-version": "v2"})
    assert (r.status, r.headers.get("x-mizzen-route")) == (200, "v2"), r
    assert "x-envoy-upstream-service-time" in r.headers           # the client sidecar's router
    seen = r.json()
    assert seen["pod"] == v2
    assert seen["peer"] == "127.0.0.1"                 # handed over by b2's sidecar (inbound cluster)
    assert seen["headers"]["host"] == f"{w.vip}:{APP_PORT}"
    assert seen["headers"].get("x-request-id")
    for _ in range(2):
        r = await w.curl(url)
        assert (r.status, r.headers.get("x-mizzen-route"), r.json()["pod"]) == (200, "v1", "b1")

    # both sidecars counted it. a: the per-port listener (bind_to_port false, so only reachable by
    # virtualOutbound's original-destination hand-off of a captured connection) and the subset clusters;
    # b: virtualInbound, which only REDIRECTed connections reach, and the inbound cluster
    assert await w.stat("a", CAPTURED) >= 3
    assert await w.stat("a", f"cluster.outbound|{APP_PORT}|v2|{HOST}.upstream_rq_200") >= 1
    assert await w.stat("a", f"cluster.outbound|{APP_PORT}|v1|{HOST}.upstream_rq_200") == 2
    assert await w.stat(v2, "listener.0.0.0.0_15006.downstream_cx_total") >= 1
    assert await w.stat(v2, f"cluster.inbound|{APP_PORT}||.upstream_rq_200") >= 1
    assert await w.stat("b1", f"cluster.inbound|{APP_PORT}||.upstream_rq_200") == 2


async def test_netns_redirect_proxy_user_is_not_captured_and_fault_applies(world: World) -> None:
    w = world
    url = f"http://{w.vip}:{APP_PORT}/"
    await _first_reply(w, url, {})
    captured = await w.stat("a", CAPTURED)
    b1 = w.servers["v1"]
    inbound_b1 = await w.stat("b1", f"cluster.inbound|{APP_PORT}||.upstream_rq_200")

    # uid 1337 (the proxy user) goes straight out: no outbound capture, no VirtualService; b1's inbound
    # capture still applies, so the app sees its own sidecar as the peer
    r = await w.curl(f"http://{b1.ip}:{APP_PORT}/direct", uid=PROXY_UID)
    assert r.status == 200 and "x-mizzen-route" not in r.headers, r
    assert r.json()["peer"] == "127.0.0.1"
    assert await w.stat("a", CAPTURED) == captured
    assert await w.stat("b1", f"cluster.inbound|{APP_PORT}||.upstream_rq_200") == inbound_b1 + 1

    # a fault-injection VirtualService is applied by a's sidecar: 418 without reaching b1
    await w.apply(FAULT_VS)
    deadline = time.monotonic() + 10
    while (r := await w.curl(url)).status != 418 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert r.status == 418, r
    before = await w.stat("b1", f"cluster.inbound|{APP_PORT}||.upstream_rq_200")
    for _ in range(3):
        assert (await w.curl(url)).status == 418
    assert await w.stat("b1", f"cluster.inbound|{APP_PORT}||.upstream_rq_200") == before
    assert await w.stat("a", CAPTURED) >= captured + 4


async def test_netns_redirect_pod_calling_its_own_service_comes_back_through_inbound(world: World) -> None:
    # b1's app calls the Service, whose v1 subset is b1 itself: its sidecar captures the call, picks its own
    # pod IP, and that connection (uid 1337 over lo to a non-127.0.0.1 address) is sent to virtualInbound
    w = world
    b1 = w.servers["v1"]
    inbound = f"cluster.inbound|{APP_PORT}||.upstream_rq_200"
    await _first_reply(w, f"http://{w.vip}:{APP_PORT}/", {})       # b1's listeners are warm too by now
    virtual_inbound = "listener.0.0.0.0_15006.downstream_cx_total"
    before_in, before_cx = await w.stat("b1", inbound), await w.stat("b1", virtual_inbound)
    r = await w.curl(f"http://{w.vip}:{APP_PORT}/self", pod=b1)
    assert (r.status, r.headers.get("x-mizzen-route")) == (200, "v1"), r
    assert (r.json()["pod"], r.json()["peer"]) == ("b1", "127.0.0.1")
    assert await w.stat("b1", CAPTURED) == 1
    assert await w.stat("b1", inbound) == before_in + 1
    assert await w.stat("b1", virtual_inbound) > before_cx
