"""Two control-plane replicas (``mizzen controlplane --kubeconfig`` processes, ``POD_NAME`` each) on one real
API server: one leader holds the Lease under its instance name; both serve a real Envoy; both sign with the
one root from ``istio-ca-secret``; every namespace gets ``istio-ca-root-cert`` with that root; kill -9 the
leader: the survivor takes over, a namespace created afterwards gets its ConfigMap within the failover bound,
and the Envoys keep their config throughout; a deleted or altered ConfigMap comes back; a stopped replica
releases the Lease. ``proxy-config``/``logs -c istio-proxy`` asked of either replica reach a pod whose agent's
debug channel is connected to the other (the replica asked forwards to its peer, found from istiod's
EndpointSlices); ``proxy-status`` asked of either lists the proxies of both, each with its replica's name
(the ISTIOD column), and after the kill names the dead replica as not answering.

The replicas live in a namespace of this test (``POD_NAMESPACE``), not istio-system, so the Lease and the
CA Secret are the test's own on the shared cluster."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from typer.testing import CliRunner

from harness import alloc_ip, eventually
from mizzen.agent.bootstrap import AGENT_ADMIN_PORT, ProxySpec
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.cli.main import app
from mizzen.core.proxy import ProxyType
from mizzen.kube.leader import Timing

pytestmark = pytest.mark.e2e

TTL = 6.0
ELECTION = "istio-namespace-controller-election"
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: ha-svc}
spec: {selector: {app: ha-svc}, ports: [{name: http, port: 9080}]}
"""


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    xds_port: int
    xds_tls_port: int
    log: Path
    http: str = ""
    state: Path = Path()

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_replica(cluster: Any, name: str, system_ns: str, work: Path, host: str,
                  *extra: str) -> Replica:
    state = work / name
    state.mkdir()
    (work / f"{name}-tmp").mkdir()     # its temp files (the CA material while it loads) land here
    log = work / f"{name}.log"
    env = {**os.environ, "POD_NAME": name, "POD_NAMESPACE": system_ns,
           "MIZZEN_LEADER_ELECTION_TTL": f"{TTL:g}s", "TMPDIR": str(work / f"{name}-tmp")}
    env.pop("MIZZEN_TOKEN", None)
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mizzen.controlplane", "--kubeconfig", str(cluster.kubeconfig),
             "--state-dir", str(state), "--xds-host", host, "--xds-port", "0", "--xds-tls-port", "0",
             "--http-port", "0", *extra],
            stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
    return Replica(name, proc, 0, 0, log, state=state)


def wait_ports(r: Replica, timeout: float = 90.0) -> None:
    """Read the control plane's one 'xds=... xds-tls=...' line (it is printed once it serves)."""
    assert r.proc.stdout is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(r.proc.stdout.fileno(), False)
    buf = b""
    while b"\n" not in buf:
        if r.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{r.name} did not start: {r.log.read_text()[-2000:]}")
        buf += r.proc.stdout.read() or b""
        time.sleep(0.1)
    fields = dict(f.split("=", 1) for f in buf.split(b"\n")[0].decode().split()[3:])
    r.xds_port = int(fields["xds"].rpartition(":")[2])
    r.xds_tls_port = int(fields["xds-tls"].rpartition(":")[2])
    r.http = fields["http"]


def stop(r: Replica, sig: int = signal.SIGTERM) -> None:
    if r.alive():
        os.kill(r.proc.pid, sig)
        try:
            r.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(r.proc.pid, signal.SIGKILL)
            r.proc.wait(timeout=5)
    if r.proc.stdout is not None:
        r.proc.stdout.close()


def kget(cluster: Any, *args: str) -> dict[str, Any] | None:
    try:
        out: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json"))
    except Exception as e:   # NotFound
        if "NotFound" in str(e) or "not found" in str(e):
            return None
        raise
    return out


def root_cm(cluster: Any, ns: str) -> str | None:
    cm = kget(cluster, "configmap", "-n", ns, "istio-ca-root-cert")
    return None if cm is None else str((cm.get("data") or {}).get("root-cert.pem"))


def serving_cert(host: str, port: int) -> x509.Certificate:
    """The certificate a replica's xDS TLS port presents (signed by its CA)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((host, port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="istiod.istio-system.svc") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der)


@pytest.fixture
def namespaces(kube_cluster: Any) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for ns in made:
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false")


@contextlib.asynccontextmanager
async def envoy(namespace: str, host: str, port: int) -> AsyncIterator[Agent]:
    spec = ProxySpec(type=ProxyType.SIDECAR, ip=alloc_ip(), namespace=namespace, name=f"client-{port}",
                     admin_port=AGENT_ADMIN_PORT, xds_host=host, xds_port=port, labels={"app": "client"})
    agent = Agent(spec, AgentOptions(concurrency=1))
    await agent.start(ready_timeout=30)
    try:
        yield agent
    finally:
        await agent.stop()


async def test_two_replicas_one_leader_shared_root_failover(kube_cluster: Any,
                                                            namespaces: list[str]) -> None:
    tag = secrets.token_hex(3)
    system_ns, app_ns, later_ns = f"kha-sys-{tag}", f"kha-app-{tag}", f"kha-later-{tag}"
    for ns in (system_ns, app_ns):
        kube_cluster.kubectl("create", "namespace", ns)
        namespaces.append(ns)
    kube_cluster.kubectl("apply", "-n", app_ns, "-f", "-", stdin=SERVICE)
    cluster_name = f"outbound|9080||ha-svc.{app_ns}.svc.cluster.local"
    with tempfile.TemporaryDirectory(prefix="mizzen-ha-") as tmp:
        host = kube_cluster.net.addr.host_ip    # on the cluster's bridge: istiod's EndpointSlices name it
        replicas = [start_replica(kube_cluster, f"istiod-{tag}-{x}", system_ns, Path(tmp), host)
                    for x in "ab"]
        try:
            for r in replicas:
                wait_ports(r)

            # one leader, holding the Lease under its instance name
            async def holder() -> str:
                lease = kget(kube_cluster, "lease", "-n", system_ns, ELECTION)
                assert lease is not None
                h = str(lease["spec"].get("holderIdentity", ""))
                assert h in {r.name for r in replicas}, h
                return h

            leader_name = await eventually(holder, timeout=20, interval=0.2)
            leader = next(r for r in replicas if r.name == leader_name)
            survivor = next(r for r in replicas if r is not leader)

            # one root, in istio-ca-secret, signing for both replicas and published to the namespaces
            secret = kget(kube_cluster, "secret", "-n", system_ns, "istio-ca-secret")
            assert secret is not None and secret["type"] == "istio.io/ca-root"
            root_pem = base64.b64decode(secret["data"]["ca-cert.pem"])
            root = x509.load_pem_x509_certificate(root_pem)
            for r in replicas:
                cert = serving_cert(host, r.xds_tls_port)
                cert.verify_directly_issued_by(root)     # raises if another root signed it
            assert "PRIVATE KEY" not in "".join(r.log.read_text() for r in replicas)
            for r in replicas:   # the CA's key lives in memory only: no copy on disk while serving
                assert not any((Path(tmp) / f"{r.name}-tmp").iterdir()), r.name

            async def published(ns: str) -> None:
                assert root_cm(kube_cluster, ns) == root_pem.decode()

            await eventually(lambda: published(app_ns), timeout=15, interval=0.2)

            # both replicas serve xDS
            async with envoy(app_ns, host, leader.xds_port) as e_leader, \
                    envoy(app_ns, host, survivor.xds_port) as e_surv:
                for e in (e_leader, e_surv):
                    assert cluster_name in await e.admin_get("/clusters")

                await debug_through_the_other_replica(kube_cluster, replicas, system_ns, app_ns, e_leader,
                                                      root_pem.decode(), Path(tmp), cluster_name)
                connected = {e_leader.spec.name: leader.name, e_surv.spec.name: survivor.name}
                for asked in replicas:
                    await eventually(functools.partial(proxy_status_lists, asked, app_ns, connected),
                                     timeout=20, interval=0.5)

                # kill -9 the leader; a namespace created afterwards gets its ConfigMap from the survivor
                os.kill(leader.proc.pid, signal.SIGKILL)
                leader.proc.wait(timeout=10)
                t0 = time.monotonic()
                kube_cluster.kubectl("create", "namespace", later_ns)
                namespaces.append(later_ns)
                checks = 0
                while root_cm(kube_cluster, later_ns) is None:
                    # the Envoys keep their config throughout (the survivor's stays connected)
                    for e in (e_leader, e_surv):
                        assert cluster_name in await e.admin_get("/clusters")
                    checks += 1
                    assert time.monotonic() - t0 < 3 * TTL, "no istio-ca-root-cert after the failover"
                    await asyncio.sleep(0.3)
                took = time.monotonic() - t0
                t = Timing.from_ttl(TTL)
                # client-go: a lease + up to two (jittered) retry periods after the last renewal, + the write
                assert took < t.lease_duration_s + 2.4 * t.retry_period_s + 2.0, took
                print(f"failover: istio-ca-root-cert in a new namespace {took:.1f}s after kill -9 "
                      f"(lease {TTL:g}s, {checks} config checks)")
                await published(later_ns)
                assert await holder() == survivor.name
                status = await proxy_status_lists(survivor, app_ns, {e_surv.spec.name: survivor.name})
                assert f"{leader.xds_tls_port} did not answer" in status.stderr, status.output
                stats = await e_surv.admin_get("/stats?filter=control_plane.connected_state")
                assert "control_plane.connected_state: 1" in stats, stats
                assert cluster_name in await e_surv.admin_get("/clusters")

            # deleted: re-created; altered: written back
            kube_cluster.kubectl("delete", "configmap", "-n", later_ns, "istio-ca-root-cert")
            await eventually(lambda: published(later_ns), timeout=10, interval=0.2)
            kube_cluster.kubectl("patch", "configmap", "-n", later_ns, "istio-ca-root-cert", "--type=merge",
                                 "-p", '{"data": {"root-cert.pem": "tampered"}}')
            await eventually(lambda: published(later_ns), timeout=10, interval=0.2)

            # a stopped replica releases the Lease and leaves no CA material behind
            stop(survivor)
            lease = kget(kube_cluster, "lease", "-n", system_ns, ELECTION)
            assert lease is not None and not lease["spec"].get("holderIdentity"), lease["spec"]
            assert not any((Path(tmp) / f"{survivor.name}-tmp").iterdir())
        finally:
            for r in replicas:
                stop(r)


async def proxy_status_lists(asked: Replica, app_ns: str, connected: dict[str, str]) -> Any:
    """``mizzen proxy-status`` asked of ``asked`` lists each proxy of ``connected`` (its name -> the replica
    it is connected to) with that replica in the ISTIOD column; returns the CLI's result."""
    token = (asked.state / "token").read_text().strip()
    res = await asyncio.to_thread(CliRunner().invoke, app, ["--server", asked.http, "proxy-status"],
                                  env={"MIZZEN_TOKEN": token})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines and "ISTIOD" in lines[0].split(), res.output
    for proxy, replica in connected.items():
        row = next((ln for ln in lines if ln.startswith(f"{proxy}.{app_ns}")), "")
        assert replica in row.split(), res.output
    return res


ISTIOD_SLICE = """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: NAME
  labels: {kubernetes.io/service-name: istiod, endpointslice.kubernetes.io/managed-by: mizzen-test}
addressType: IPv4
ports: [{name: https-dns, port: PORT, protocol: TCP}]
endpoints: [{addresses: [HOST], conditions: {ready: true}, targetRef: {kind: Pod, name: NAME}}]
"""


async def debug_through_the_other_replica(cluster: Any, replicas: list[Replica], system_ns: str, app_ns: str,
                                          e: Agent, root_pem: str, tmp: Path, cluster_name: str) -> None:
    """A pod's agent opens its debug channel (its bound istio-ca token, TLS) to replica a; asked of replica
    b (its API, its token) ``proxy-config clusters`` and ``logs -c istio-proxy`` answer through a, which b
    finds in istiod's EndpointSlices (selector-less ``istiod`` Service here, one slice per replica)."""
    from mizzen.agent.debug_channel import DebugChannel
    from mizzen.security.nodeagent.upstream import ControlPlaneTls, TokenFile

    t0 = time.monotonic()
    host = cluster.net.addr.host_ip
    cluster.kubectl("apply", "-n", system_ns, "-f", "-", stdin=(
        "apiVersion: v1\nkind: Service\nmetadata: {name: istiod}\n"
        "spec: {ports: [{name: https-dns, port: 15012}]}\n"))
    for r in replicas:
        slice_doc = ISTIOD_SLICE.replace("NAME", r.name).replace("PORT", str(r.xds_tls_port))
        cluster.kubectl("apply", "-n", system_ns, "-f", "-", stdin=slice_doc.replace("HOST", host))
    # a pod (never scheduled: nothing selects it) whose bound token the agent presents
    pod = "dbg"
    cluster.kubectl("apply", "-n", app_ns, "-f", "-", stdin=(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, labels: {{app: dbg}}}}\nspec:\n"
        "  nodeSelector: {mizzen.test/nowhere: none}\n"
        "  containers: [{name: app, image: x}, {name: istio-proxy, image: proxyv2}]\n"))
    uid = json.loads(cluster.kubectl("get", "pod", "-n", app_ns, pod, "-o", "json"))["metadata"]["uid"]
    token = tmp / "dbg-token"
    token.write_text(cluster.kubectl("create", "token", "default", "-n", app_ns, "--audience", "istio-ca",
                                     "--bound-object-kind", "Pod", "--bound-object-name", pod,
                                     "--bound-object-uid", uid, "--duration", "10m").strip())
    token.chmod(0o600)
    a, b = replicas
    tls = ControlPlaneTls(f"{host}:{a.xds_tls_port}", root_pem, TokenFile(token))
    node_id = f"sidecar~{e.spec.ip}~{pod}.{app_ns}~{app_ns}.svc.cluster.local"
    channel = DebugChannel(tls, node_id, {"NAMESPACE": app_ns, "SERVICE_ACCOUNT": "default"},
                           Path(e.admin_connect_path), e.log_path)
    channel.start()
    try:
        api_token = (b.state / "token").read_text().strip()

        def cli(*args: str) -> Any:
            """The mizzen CLI in a thread (this loop runs the agent's side of the channel)."""
            return CliRunner().invoke(app, ["--server", b.http, *args], env={"MIZZEN_TOKEN": api_token})

        async def through_b() -> None:
            r = await asyncio.to_thread(cli, "proxy-config", "clusters", pod, "-n", app_ns, "-o", "json")
            assert r.exit_code == 0, r.output
            assert cluster_name in r.stdout

        await eventually(through_b, timeout=30, interval=0.5)
        r = await asyncio.to_thread(cli, "logs", pod, "-n", app_ns, "-c", "istio-proxy", "--tail", "5")
        assert r.exit_code == 0 and r.stdout.strip(), r.output
        assert channel.answered >= 2      # b's requests reached the agent connected to a
        # a pod no replica has a channel for: a 503 with one line saying so
        req = urllib.request.Request(f"{b.http}/debug/proxy-admin/{app_ns}/nobody/clusters",
                                     headers={"Authorization": f"Bearer {api_token}"})
        with pytest.raises(urllib.error.HTTPError) as err:
            await asyncio.to_thread(urllib.request.urlopen, req, timeout=30)
        assert err.value.code == 503
        assert "no debug channel to any control-plane replica" in err.value.read().decode()
        print(f"debug through the other replica: {time.monotonic() - t0:.1f}s")
    finally:
        await channel.stop()
        await tls.close()
