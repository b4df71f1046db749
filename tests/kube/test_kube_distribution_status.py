"""Istio's distribution status (``PILOT_ENABLE_STATUS``) on the shared real API server.

A control plane (``mizzen controlplane --kubeconfig``, status and analysis on, short intervals) with a proxy:
a real gRPC ADS client on its xDS port that subscribes to CDS, LDS and the RDS routes its listeners name,
and ACKs, holds back or NACKs each response as the test says. A VirtualService (naming a Gateway that does
not exist, so analysis also writes IST0101) gets ``observedGeneration: 1`` and ``Reconciled True "1/1
proxies up to date."``; edited to generation 2 while the proxy holds its ACKs, the status stays on
generation 1 until the proxy ACKs; a generation the proxy NACKs is not reported (Istio: a generation is
reported once a proxy ACKed it) until a second proxy ACKs it ("1/2 proxies up to date.", False); an edit
Mizzen rejects and a rejected new object get nothing; ``validationMessages`` stay throughout; the writer is
the leader of ``istio-status-leader``. A second control plane in its own namespace, status off (the
default), with a proxy of its own on the same objects, takes no status lease and writes nothing.
Without a cluster: the condition's shape and the switches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from test_kube_ha import SERVICE, kget, start_replica, stop, wait_ports

from harness import alloc_ip, eventually
from mizzen.core.proxy import Meta
from mizzen.kube.distribution import reconciled_condition, status_enabled, status_qps, update_interval
from mizzen.kube.distribution_report import DATA_KEY, HEARTBEAT_ENV, LABEL, report_name
from mizzen.kube.leader import STATUS_CONTROLLER
from mizzen.kube.status import DOC_PREFIX, field_manager
from mizzen.xds.resources import CLUSTER, LISTENER, ROUTE

IST0101 = {"documentationUrl": f"{DOC_PREFIX}/ist0101/", "level": "ERROR",
           "type": {"code": "IST0101", "name": "ReferencedResourceNotFound"}}
VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [ha-svc]
  gateways: [nogw, mesh]
  http: [{route: [{destination: {host: ha-svc}}], timeout: TIMEOUT}]
"""


def test_condition_shape_and_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    first = reconciled_condition(1, 2, None, now="2026-01-01T00:00:00.000000Z")
    t0 = "2026-01-01T00:00:00.000000Z"
    assert first == {"type": "Reconciled", "status": "False", "lastProbeTime": t0, "lastTransitionTime": t0,
                     "message": "1/2 proxies up to date."}
    same = reconciled_condition(0, 2, first, now="2026-01-01T00:00:05.000000Z")      # still False
    assert same["lastTransitionTime"] == t0 and same["message"] == "0/2 proxies up to date."
    flipped = reconciled_condition(2, 2, first, now="2026-01-01T00:00:09.000000Z")
    assert flipped["status"] == "True" and flipped["lastTransitionTime"] == "2026-01-01T00:00:09.000000Z"
    for name in ("PILOT_ENABLE_STATUS", "PILOT_STATUS_UPDATE_INTERVAL", "PILOT_STATUS_QPS"):
        monkeypatch.delenv(name, raising=False)
    assert not status_enabled() and update_interval() == 0.5 and status_qps() == 100.0   # Istio's defaults
    monkeypatch.setenv("PILOT_ENABLE_STATUS", "true")
    monkeypatch.setenv("PILOT_STATUS_UPDATE_INTERVAL", "200ms")
    monkeypatch.setenv("PILOT_STATUS_QPS", "nope")
    assert status_enabled() and update_interval() == 0.2 and status_qps() == 100.0


def _print_tails(replicas: list[Any]) -> None:
    """The replicas' last log lines, for a failing test's output."""
    for r in replicas:
        print(f"--- {r.name} (last 40 lines)\n" + "\n".join(r.log.read_text().splitlines()[-40:]))


@contextlib.asynccontextmanager
async def _serving(replicas: list[Any], proxies: list[Proxy], *more: list[Any]) -> AsyncIterator[None]:
    """On the way out of the body: the proxies closed and the replicas (and ``more`` of them) stopped; a
    failing body prints the replicas' log tails first."""
    try:
        yield
    except BaseException:
        _print_tails(replicas)
        raise
    finally:
        for x in proxies:
            await x.close()
        for group in (replicas, *more):
            for r in group:
                stop(r)


class Proxy:
    """One ADS stream as a sidecar in ``namespace``; ``mode`` is what it does with each response: "ack",
    "hold" (keep it, ACK later with :meth:`release`) or "nack"."""

    def __init__(self, target: str, namespace: str) -> None:
        self.node = f"sidecar~{alloc_ip()}~client.{namespace}~{namespace}.svc.cluster.local"
        self.namespace = namespace
        self.mode = "ack"
        self.held: list[discovery_pb2.DiscoveryResponse] = []
        self.received: list[discovery_pb2.DiscoveryResponse] = []
        self.routes: list[str] = []
        self._out: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        self.channel = grpc.aio.insecure_channel(target)
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).StreamAggregatedResources(
            self._requests())
        self.task = asyncio.create_task(self._run())

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while True:
            yield await self._out.get()

    def _send(self, type_url: str, names: list[str], resp: discovery_pb2.DiscoveryResponse | None = None,
              error: str | None = None, node: bool = False) -> None:
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names)
        if resp is not None:
            req.response_nonce = resp.nonce
            req.version_info = resp.version_info   # (a NACK names the rejected version too: good enough)
        if error is not None:
            req.error_detail.code = 3
            req.error_detail.message = error
        if node:
            req.node.id = self.node
            md = struct_pb2.Struct()
            # as the agent's sidecars: the outbound HTTP proxy listener, whose routes come from RDS
            md.update({Meta.NAMESPACE: self.namespace, Meta.LABELS: {"app": "client"},
                       Meta.HTTP_PROXY_PORT: "15080"})
            req.node.metadata.CopyFrom(md)
        self._out.put_nowait(req)

    def _answer(self, resp: discovery_pb2.DiscoveryResponse) -> None:
        names = self.routes if resp.type_url == ROUTE else []
        if self.mode == "ack":
            self._send(resp.type_url, names, resp)
        elif self.mode == "nack":
            self._send(resp.type_url, names, resp, error="rejected by the test")
        else:
            self.held.append(resp)

    def release(self) -> None:
        """ACK the held responses (the newest of each type)."""
        self.mode = "ack"
        newest = {r.type_url: r for r in self.held}
        self.held.clear()
        for resp in newest.values():
            self._answer(resp)

    async def _run(self) -> None:
        self._send(CLUSTER, [], node=True)
        self._send(LISTENER, [])
        while True:
            resp = await self.call.read()
            if resp is grpc.aio.EOF:
                return
            self.received.append(resp)
            if resp.type_url == LISTENER:
                routes = sorted(_route_names(resp))
                if routes != self.routes:     # Envoy asks for the routes its listeners name
                    self.routes = routes
                    self._send(ROUTE, routes)
            self._answer(resp)

    async def close(self) -> None:
        self.call.cancel()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await self.task
        await self.channel.close()


def _route_names(resp: discovery_pb2.DiscoveryResponse) -> set[str]:
    out = set()
    for a in resp.resources:
        lis = listener_pb2.Listener()
        a.Unpack(lis)
        for chain in lis.filter_chains:
            for f in chain.filters:
                if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                    hcm = hcm_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(hcm)
                    if hcm.HasField("rds"):
                        out.add(hcm.rds.route_config_name)
    return out


BROKEN = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: NAME}
spec:
  hosts: [ha-svc]
  gateways: [nogw, mesh]
  http: [{match: [{uri: {regex: "(unclosed"}}], route: [{destination: {host: ha-svc}}]}]
"""


def mesh_configmap(cluster: Any, system_ns: str, app_ns: str) -> None:
    """The mesh config of ``system_ns``: only this test's namespace (discoverySelectors), so other tests'
    objects on the shared cluster are not written."""
    selectors = f"discoverySelectors: [{{matchLabels: {{kubernetes.io/metadata.name: {app_ns}}}}}]"
    cluster.kubectl("apply", "-f", "-", stdin=cluster.kubectl(
        "create", "configmap", "istio", "-n", system_ns, "--dry-run=client", "-o", "yaml",
        f"--from-literal=mesh={selectors}"))


@pytest.mark.e2e
async def test_reconciled_follows_the_proxys_acks(kube_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    t_start = time.monotonic()
    tag = secrets.token_hex(3)
    system_ns, off_ns, app_ns = f"kds-sys-{tag}", f"kds-off-{tag}", f"kds-app-{tag}"
    made: list[str] = []
    for name in ("PILOT_ENABLE_STATUS", "PILOT_ENABLE_ANALYSIS"):
        monkeypatch.delenv(name, raising=False)
    proxies: list[Proxy] = []
    replicas = []
    try:
        for ns in (system_ns, off_ns, app_ns):
            kube_cluster.kubectl("create", "namespace", ns)
            made.append(ns)
        kube_cluster.kubectl("apply", "-n", app_ns, "-f", "-", stdin=SERVICE)
        mesh_configmap(kube_cluster, system_ns, app_ns)
        mesh_configmap(kube_cluster, off_ns, app_ns)
        with tempfile.TemporaryDirectory(prefix="mizzen-kds-") as tmp:
            host = kube_cluster.net.addr.host_ip
            meshes = {}
            for ns in (system_ns, off_ns):
                meshes[ns] = Path(tmp) / f"mesh-{ns}.yaml"
                meshes[ns].write_text(f"rootNamespace: {ns}\n")
            # a control plane with status off (the default), seeing the same objects with a proxy of its own
            off = start_replica(kube_cluster, f"istiod-{tag}-off", off_ns, Path(tmp), host, "--mesh-config",
                                str(meshes[off_ns]))
            replicas.append(off)
            monkeypatch.setenv("PILOT_ENABLE_STATUS", "true")
            monkeypatch.setenv("PILOT_STATUS_UPDATE_INTERVAL", "100ms")
            monkeypatch.setenv("PILOT_ENABLE_ANALYSIS", "true")
            monkeypatch.setenv("PILOT_ANALYSIS_INTERVAL", "1s")
            cp = start_replica(kube_cluster, f"istiod-{tag}", system_ns, Path(tmp), host, "--mesh-config",
                               str(meshes[system_ns]))
            replicas.append(cp)
            async with _serving(replicas, proxies):
                wait_ports(cp)
                wait_ports(off)
                p = Proxy(f"{host}:{cp.xds_port}", app_ns)
                proxies += [p, Proxy(f"{host}:{off.xds_port}", app_ns)]

                def vs(name: str = "reviews") -> dict[str, Any]:
                    got: dict[str, Any] = json.loads(kube_cluster.kubectl(
                        "get", "virtualservice", "-n", app_ns, name, "-o", "json", "--show-managed-fields"))
                    return got

                def apply(text: str, name: str = "reviews") -> int:
                    kube_cluster.kubectl("apply", "-n", app_ns, "-f", "-", stdin=text.replace("NAME", name))
                    return int(vs(name)["metadata"]["generation"])

                def reconciled(status: dict[str, Any]) -> dict[str, Any]:
                    conds = [c for c in status.get("conditions") or () if c.get("type") == "Reconciled"]
                    assert len(conds) == 1, status
                    return conds[0]

                async def reported(generation: int, message: str = "1/1 proxies up to date.",
                                   ok: str = "True") -> None:
                    status = vs().get("status") or {}
                    assert status.get("observedGeneration") == generation, status
                    cond = reconciled(status)
                    assert (cond["status"], cond["message"]) == (ok, message), cond
                    assert status.get("validationMessages") == [IST0101], status   # analysis' stay

                async def routes_sent(after: int) -> None:   # a new RDS response reached the proxy
                    assert any(r.type_url == ROUTE for r in p.received[after:]), len(p.received)

                async def acked_connected() -> None:
                    for x in proxies:
                        got = [(r.type_url.rsplit(".", 1)[1], len(r.resources)) for r in x.received]
                        assert any(r.type_url == ROUTE for r in x.received) and not x.held, (got, x.routes)

                await eventually(acked_connected, timeout=20, interval=0.1)
                assert apply(VS.replace("TIMEOUT", "5s")) == 1
                await eventually(lambda: reported(1), timeout=20, interval=0.2)
                first = reconciled(vs()["status"])
                lease = kget(kube_cluster, "lease", "-n", system_ns, STATUS_CONTROLLER)
                assert lease is not None and lease["spec"]["holderIdentity"] == cp.name

                # generation 2 while the proxy holds its ACKs: still generation 1 (nothing rewritten)
                p.mode = "hold"
                seen = len(p.received)
                assert apply(VS.replace("TIMEOUT", "6s")) == 2
                await eventually(lambda: routes_sent(seen), timeout=10, interval=0.1)
                await asyncio.sleep(1.5)    # 15 update intervals
                await reported(1)
                assert reconciled(vs()["status"]) == first
                p.release()                 # ACKed: generation 2
                await eventually(lambda: reported(2), timeout=10, interval=0.1)

                # generation 3, NACKed: stays on generation 2
                p.mode = "nack"
                seen = len(p.received)
                assert apply(VS.replace("TIMEOUT", "7s")) == 3
                await eventually(lambda: routes_sent(seen), timeout=10, interval=0.1)
                await asyncio.sleep(1.5)
                await reported(2)
                # a second proxy that ACKs: generation 3 is reported, one of two proxies up to date
                proxies.append(Proxy(f"{host}:{cp.xds_port}", app_ns))
                await eventually(lambda: reported(3, "1/2 proxies up to date.", "False"), timeout=10,
                                 interval=0.1)

                # rejected: an edit Mizzen refuses (generation 4) and a new object it refuses get nothing
                assert apply(BROKEN) == 4
                apply(BROKEN, "broken")
                await asyncio.sleep(1.5)
                await reported(3, "1/2 proxies up to date.", "False")
                assert "observedGeneration" not in (vs("broken").get("status") or {})
                writes = [ln for ln in cp.log.read_text().splitlines()
                          if f"status: VirtualService {app_ns}/reviews observedGeneration" in ln]
                assert len(writes) == 3, writes     # no churn: one write per reported state

                # status off: that control plane took no status lease, wrote no report and no status field
                assert kget(kube_cluster, "lease", "-n", off_ns, STATUS_CONTROLLER) is None
                assert _report(kube_cluster, off_ns, off.name) is None
                report = _report(kube_cluster, system_ns, cp.name)
                assert report is not None and report["dataPlaneCount"] == 2, report
                managers = {str(m.get("manager")) for m in vs()["metadata"]["managedFields"]
                            if m.get("subresource") == "status"}
                assert managers == {field_manager(cp.name)}, managers
                print(f"distribution status test {time.monotonic() - t_start:.1f}s")
    finally:
        for ns in made:
            kube_cluster.kubectl("delete", "namespace", ns, "--wait=false")


def _report(cluster: Any, ns: str, replica: str) -> dict[str, Any] | None:
    """A replica's distribution report ConfigMap, its YAML read (None when absent)."""
    cm = kget(cluster, "configmap", "-n", ns, report_name(replica))
    if cm is None:
        return None
    assert cm["metadata"]["labels"] == {LABEL: "true"}, cm["metadata"]
    got: dict[str, Any] = yaml.safe_load(cm["data"][DATA_KEY])
    return got


@pytest.mark.e2e
async def test_two_replicas_sum_their_proxies(kube_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas in one namespace, status on for both, one proxy on each: the leader of
    istio-status-leader writes the sum of both replicas' proxies (its own, and the other's report); the
    other stopped cleanly deletes its report; a third one killed leaves its report, which goes stale."""
    t_start = time.monotonic()
    tag = secrets.token_hex(3)
    system_ns, app_ns = f"kdh-sys-{tag}", f"kdh-app-{tag}"
    made: list[str] = []
    monkeypatch.delenv("PILOT_ENABLE_ANALYSIS", raising=False)
    monkeypatch.setenv("PILOT_ENABLE_STATUS", "true")
    monkeypatch.setenv("PILOT_STATUS_UPDATE_INTERVAL", "100ms")
    monkeypatch.setenv(HEARTBEAT_ENV, "500ms")
    proxies: list[Proxy] = []
    replicas, killed = [], []
    try:
        for ns in (system_ns, app_ns):
            kube_cluster.kubectl("create", "namespace", ns)
            made.append(ns)
        kube_cluster.kubectl("apply", "-n", app_ns, "-f", "-", stdin=SERVICE)
        mesh_configmap(kube_cluster, system_ns, app_ns)
        with tempfile.TemporaryDirectory(prefix="mizzen-kdh-") as tmp:
            host = kube_cluster.net.addr.host_ip
            mesh = Path(tmp) / "mesh.yaml"
            mesh.write_text(f"rootNamespace: {system_ns}\n")
            for i in range(2):
                replicas.append(start_replica(kube_cluster, f"istiod-{tag}-{i}", system_ns, Path(tmp), host,
                                              "--mesh-config", str(mesh)))
            async with _serving(replicas, proxies, killed):
                for r in replicas:
                    wait_ports(r)

                async def led() -> str:
                    lease = kget(kube_cluster, "lease", "-n", system_ns, STATUS_CONTROLLER)
                    assert lease is not None and lease["spec"].get("holderIdentity"), lease
                    return str(lease["spec"]["holderIdentity"])

                await eventually(led, timeout=30, interval=0.2)
                holder = await led()
                leader = next(r for r in replicas if r.name == holder)
                other = next(r for r in replicas if r.name != holder)
                theirs = Proxy(f"{host}:{other.xds_port}", app_ns)
                proxies += [Proxy(f"{host}:{leader.xds_port}", app_ns), theirs]

                def vs() -> dict[str, Any]:
                    got: dict[str, Any] = json.loads(kube_cluster.kubectl(
                        "get", "virtualservice", "-n", app_ns, "reviews", "-o", "json",
                        "--show-managed-fields"))
                    return got

                def apply(text: str) -> int:
                    kube_cluster.kubectl("apply", "-n", app_ns, "-f", "-", stdin=text)
                    return int(vs()["metadata"]["generation"])

                async def reported(generation: int, message: str, ok: str) -> None:
                    status = vs().get("status") or {}
                    assert status.get("observedGeneration") == generation, status
                    conds = [c for c in status.get("conditions") or () if c.get("type") == "Reconciled"]
                    assert [(c["status"], c["message"]) for c in conds] == [(ok, message)], status

                async def both_reporting() -> None:
                    for r in replicas:
                        report = _report(kube_cluster, system_ns, r.name)
                        assert report is not None and report["reporter"] == r.name, report
                        assert report["dataPlaneCount"] == 1, report

                await eventually(both_reporting, timeout=20, interval=0.2)
                assert apply(VS.replace("TIMEOUT", "5s")) == 1
                await eventually(lambda: reported(1, "2/2 proxies up to date.", "True"), timeout=20,
                                 interval=0.2)
                key = f"networking.istio.io/v1/virtualservices/{app_ns}/reviews/1"
                report = _report(kube_cluster, system_ns, other.name)
                assert report is not None and report["inProgressResources"] == {key: 1}, report

                # the other replica's proxy holds its ACK of generation 2: the leader says 1/2
                theirs.mode = "hold"
                assert apply(VS.replace("TIMEOUT", "6s")) == 2
                await eventually(lambda: reported(2, "1/2 proxies up to date.", "False"), timeout=20,
                                 interval=0.1)
                await asyncio.sleep(1.0)     # ten update intervals: it stays so
                await reported(2, "1/2 proxies up to date.", "False")
                theirs.release()
                await eventually(lambda: reported(2, "2/2 proxies up to date.", "True"), timeout=20,
                                 interval=0.1)
                managers = {str(m.get("manager")) for m in vs()["metadata"]["managedFields"]
                            if m.get("subresource") == "status"}
                assert managers == {field_manager(leader.name)}, managers

                # the other replica stops cleanly: its report goes, the leader counts its own proxy only
                stop(other)
                assert other.proc.returncode == 0, other.proc.returncode     # (not killed after 15 s)
                assert _report(kube_cluster, system_ns, other.name) is None
                await eventually(lambda: reported(2, "1/1 proxies up to date.", "True"), timeout=20,
                                 interval=0.1)
                assert _report(kube_cluster, system_ns, leader.name) is not None

                # a third replica with a proxy, killed: its report stays but goes stale (4 heartbeats, 2 s)
                killed.append(start_replica(kube_cluster, f"istiod-{tag}-2", system_ns, Path(tmp), host,
                                            "--mesh-config", str(mesh)))
                wait_ports(killed[0])
                proxies.append(Proxy(f"{host}:{killed[0].xds_port}", app_ns))
                await eventually(lambda: reported(2, "2/2 proxies up to date.", "True"), timeout=20,
                                 interval=0.1)
                stop(killed[0], signal.SIGKILL)
                t_killed = time.monotonic()
                assert _report(kube_cluster, system_ns, killed[0].name) is not None
                await eventually(lambda: reported(2, "1/1 proxies up to date.", "True"), timeout=20,
                                 interval=0.1)
                assert time.monotonic() - t_killed > 1.0     # not before the report went stale
                stale = f"{report_name(killed[0].name)} of {killed[0].name} not refreshed"
                assert stale in leader.log.read_text()
                print(f"distribution status HA test {time.monotonic() - t_start:.1f}s")
            left = [r.name for r in replicas if _report(kube_cluster, system_ns, r.name) is not None]
            if left:
                _print_tails(replicas)
            assert not left, left          # every replica stopped cleanly deleted its report
            assert [r.proc.returncode for r in replicas] == [0, 0]
    finally:
        for ns in made:
            kube_cluster.kubectl("delete", "namespace", ns, "--wait=false")
