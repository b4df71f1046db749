"""Leader-only status writes across two control-plane replicas, on the shared real API server.

Two replicas (``mizzen controlplane --kubeconfig``, ``PILOT_ENABLE_ANALYSIS=true``, a 1 s analysis interval)
as test_kube_ha starts them: a VirtualService naming a Gateway that does not exist gets IST0101 in its
``status.validationMessages`` (Istio's AnalysisMessageBase shape), written through ``/status`` by the
leader of ``istio-analyze-leader`` only (``managedFields``: only its field manager on the status); an
unchanged status is not rewritten; fixing the object clears it; kill -9 that leader: the other replica
takes the Lease and writes the status of an object changed afterwards, under its own field manager only.
(proxy-status across the replicas is judged in test_kube_ha, which has a proxy connected to each.)
Without a cluster: the message shape and the interval.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from test_kube_ha import SERVICE, kget, start_replica, stop, wait_ports

from harness import eventually
from mizzen.config.errors import Severity
from mizzen.config.model import ConfigKey
from mizzen.kube.leader import ANALYZE_CONTROLLER, Timing
from mizzen.kube.status import DOC_PREFIX, Finding, analysis_interval, field_manager, validation_messages

TTL = 6.0   # as test_kube_ha: a shorter lease flaps on a loaded machine
IST0101 = {"documentationUrl": f"{DOC_PREFIX}/ist0101/", "level": "ERROR",
           "type": {"code": "IST0101", "name": "ReferencedResourceNotFound"}}
BAD_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: NAME}
spec:
  hosts: [ha-svc]
  gateways: [nogw]
  http: [{route: [{destination: {host: ha-svc}}]}]
"""
GOOD_VS = BAD_VS.replace("  gateways: [nogw]\n", "")


def test_validation_messages_shape_and_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    found = [Finding("VirtualService", "ns", "a", "IST0101", "ReferencedResourceNotFound", Severity.ERROR),
             Finding("VirtualService", "ns", "a", "IST0132", "VirtualServiceHostNotFoundInGateway",
                     Severity.WARNING)]
    msgs = validation_messages(found)
    assert msgs == {ConfigKey("VirtualService", "ns", "a"): [IST0101, {
        "documentationUrl": f"{DOC_PREFIX}/ist0132/", "level": "WARNING",
        "type": {"code": "IST0132", "name": "VirtualServiceHostNotFoundInGateway"}}]}
    monkeypatch.delenv("PILOT_ANALYSIS_INTERVAL", raising=False)
    assert analysis_interval() == 10.0
    monkeypatch.setenv("PILOT_ANALYSIS_INTERVAL", "2s")
    assert analysis_interval() == 2.0
    monkeypatch.setenv("PILOT_ANALYSIS_INTERVAL", "100ms")   # below 1 s: Istio's default
    assert analysis_interval() == 10.0
    assert field_manager("istiod-a") == "pilot-discovery/istiod-a"


def status_managers(obj: dict[str, Any]) -> set[str]:
    return {str(m.get("manager")) for m in obj["metadata"].get("managedFields") or ()
            if m.get("subresource") == "status"}


@pytest.mark.e2e
async def test_analysis_status_leader_only(kube_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    t_start = time.monotonic()
    tag = secrets.token_hex(3)
    system_ns, app_ns = f"kst-sys-{tag}", f"kst-app-{tag}"
    made: list[str] = []
    monkeypatch.setenv("PILOT_ENABLE_ANALYSIS", "true")
    monkeypatch.setenv("PILOT_ANALYSIS_INTERVAL", "1s")
    monkeypatch.setattr("test_kube_ha.TTL", TTL)        # the replicas' MIZZEN_LEADER_ELECTION_TTL
    try:
        for ns in (system_ns, app_ns):
            kube_cluster.kubectl("create", "namespace", ns)
            made.append(ns)
        kube_cluster.kubectl("apply", "-n", app_ns, "-f", "-", stdin=SERVICE)
        # the replicas see only this test's namespace (meshConfig discoverySelectors, in the mesh ConfigMap of
        # their own root namespace): the session cluster may hold other tests' objects, whose status writes
        # (paced) would queue ahead of this test's
        selectors = f"discoverySelectors: [{{matchLabels: {{kubernetes.io/metadata.name: {app_ns}}}}}]"
        kube_cluster.kubectl("apply", "-f", "-", stdin=kube_cluster.kubectl(
            "create", "configmap", "istio", "-n", system_ns, "--dry-run=client", "-o", "yaml",
            f"--from-literal=mesh={selectors}"))
        with tempfile.TemporaryDirectory(prefix="mizzen-kst-") as tmp:
            host = kube_cluster.net.addr.host_ip
            mesh = Path(tmp) / "mesh.yaml"
            mesh.write_text(f"rootNamespace: {system_ns}\n")
            replicas = [start_replica(kube_cluster, f"istiod-{tag}-{x}", system_ns, Path(tmp), host,
                                      "--mesh-config", str(mesh)) for x in "ab"]
            try:
                for r in replicas:
                    wait_ports(r)
                by_name = {r.name: r for r in replicas}

                async def holder() -> str:
                    lease = kget(kube_cluster, "lease", "-n", system_ns, ANALYZE_CONTROLLER)
                    assert lease is not None
                    h = str(lease["spec"].get("holderIdentity", ""))
                    assert h in by_name, h
                    return h

                leader = by_name[await eventually(holder, timeout=20, interval=0.2)]
                survivor = next(r for r in replicas if r is not leader)

                def vs(name: str = "bad") -> dict[str, Any]:
                    got: dict[str, Any] = json.loads(kube_cluster.kubectl(
                        "get", "virtualservice", "-n", app_ns, name, "-o", "json", "--show-managed-fields"))
                    return got

                async def has_message(writer: str, name: str = "bad") -> None:
                    obj = vs(name)
                    assert (obj.get("status") or {}).get("validationMessages") == [IST0101], obj.get("status")
                    assert status_managers(obj) == {field_manager(writer)}, obj["metadata"]["managedFields"]

                async def cleared() -> None:
                    obj = vs()
                    assert not (obj.get("status") or {}).get("validationMessages"), obj.get("status")
                    assert status_managers(obj) == set(), obj["metadata"]["managedFields"]   # status removed

                # a VirtualService naming a Gateway that does not exist: IST0101 from the leader only
                kube_cluster.kubectl("apply", "-n", app_ns, "-f", "-", stdin=BAD_VS.replace("NAME", "bad"))
                await eventually(lambda: has_message(leader.name), timeout=15, interval=0.2)
                # no churn: the round that writes another object's message does not write this one again
                # (an identical patch leaves no trace in the object: the leader's log counts the writes)
                kube_cluster.kubectl("apply", "-n", app_ns, "-f", "-", stdin=BAD_VS.replace("NAME", "bad2"))
                await eventually(lambda: has_message(leader.name, "bad2"), timeout=15, interval=0.2)
                writes = [ln for ln in leader.log.read_text().splitlines()
                          if f"status: VirtualService {app_ns}/bad validationMessages" in ln]
                assert len(writes) == 1, writes
                # fixed: the message is cleared
                kube_cluster.kubectl("apply", "-n", app_ns, "-f", "-", stdin=GOOD_VS.replace("NAME", "bad"))
                await eventually(cleared, timeout=15, interval=0.2)

                # kill -9 the leader; the survivor takes the Lease and writes the status of an object changed
                # afterwards, under its own field manager only
                os.kill(leader.proc.pid, signal.SIGKILL)
                leader.proc.wait(timeout=10)
                t0 = time.monotonic()
                kube_cluster.kubectl("apply", "-n", app_ns, "-f", "-", stdin=BAD_VS.replace("NAME", "bad"))
                await eventually(lambda: has_message(survivor.name), timeout=4 * TTL, interval=0.2)
                took = time.monotonic() - t0
                t = Timing.from_ttl(TTL)
                assert took < t.lease_duration_s + 2.4 * t.retry_period_s + 3.0, took
                assert await holder() == survivor.name
                print(f"status failover: {took:.1f}s after kill -9 (lease {TTL:g}s); "
                      f"test {time.monotonic() - t_start:.1f}s")
            except BaseException:
                for r in replicas:      # what the replicas said, for a failure's report
                    print(f"--- {r.name} (last 40 lines)\n" + "\n".join(r.log.read_text().splitlines()[-40:]))
                raise
            finally:
                for r in replicas:
                    stop(r)
    finally:
        for ns in made:
            kube_cluster.kubectl("delete", "namespace", ns, "--wait=false")
