"""Lease leader election against a real API server: racing candidates end with one leader; a leader whose
renewals are refused (its RBAC binding deleted) stops its leader-only work before another replica takes the
Lease; a stopped leader releases the Lease so another takes over at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from harness import eventually
from mizzen.kube.client import connect
from mizzen.kube.leader import TTL_ENV, ElectionError, LeaderElection, Timing, timing_from_env

TTL = 4.0
ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: leases}
rules: [{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, create, update]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: leases-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: leases}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: USER}]
"""


@pytest.fixture
def namespace(kube_cluster: Any) -> Any:
    ns = f"kha-le-{secrets.token_hex(3)}"
    kube_cluster.kubectl("create", "namespace", ns)
    yield ns
    kube_cluster.kubectl("delete", "namespace", ns, "--wait=false")


def lease(cluster: Any, ns: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(cluster.kubectl("get", "lease", "-n", ns, name, "-o", "json"))["spec"]
    return spec


class Work:
    """A leader-only function recording when it ran and when it was stopped."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.stopped: list[float] = []

    async def __call__(self) -> None:
        self.started.append(time.monotonic())
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped.append(time.monotonic())


@contextlib.asynccontextmanager
async def running(election: LeaderElection) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(election.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_racing_candidates_elect_one_and_a_stopped_leader_releases(kube_cluster: Any,
                                                                         namespace: str) -> None:
    api = await connect(kube_cluster.kubeconfig)
    try:
        name = "istio-namespace-controller-election"
        elections = [LeaderElection(api, namespace, name, f"replica-{i}", Timing.from_ttl(TTL))
                     for i in range(3)]
        works = [Work() for _ in elections]
        for e, w in zip(elections, works, strict=True):
            e.add_run_function("work", w)
        async with contextlib.AsyncExitStack() as stack:
            tasks = [await stack.enter_async_context(running(e)) for e in elections]

            async def one_leader() -> LeaderElection:
                leaders = [e for e in elections if e.leading]
                assert len(leaders) == 1, [e.identity for e in leaders]
                return leaders[0]

            leader = await eventually(one_leader, timeout=10)
            await asyncio.sleep(TTL / 2)          # several retry periods: still the same single leader
            assert await one_leader() is leader
            spec = lease(kube_cluster, namespace, name)
            assert spec["holderIdentity"] == leader.identity and spec["leaseDurationSeconds"] == int(TTL)
            assert sum(len(w.started) for w in works) == 1

            t0 = time.monotonic()
            i = elections.index(leader)
            tasks[i].cancel()                     # a graceful stop releases the lease
            with contextlib.suppress(asyncio.CancelledError):
                await tasks[i]
            assert works[i].stopped and not leader.leading
            nxt = await eventually(one_leader, timeout=10)
            took = time.monotonic() - t0
            assert nxt is not leader and took < TTL, took   # no need to wait the lease out
            spec = lease(kube_cluster, namespace, name)
            assert spec["holderIdentity"] == nxt.identity and spec["leaseTransitions"] >= 1
    finally:
        await api.close()


async def test_leader_that_cannot_renew_stops_before_another_takes_over(kube_cluster: Any,
                                                                        namespace: str) -> None:
    user = f"kha-replica-{secrets.token_hex(2)}"
    assert kube_cluster.pki is not None
    limited: Path = kube_cluster.pki.kubeconfig(user, user)
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=ROLE.replace("USER", user))
    api_a, api_b = await connect(limited), await connect(kube_cluster.kubeconfig)
    try:
        name = "istio-validation-controller-election"
        a = LeaderElection(api_a, namespace, name, "replica-a", Timing.from_ttl(TTL))
        b = LeaderElection(api_b, namespace, name, "replica-b", Timing.from_ttl(TTL))
        work_a, work_b = Work(), Work()
        a.add_run_function("work", work_a)
        b.add_run_function("work", work_b)
        async with running(a):
            async def leads(e: LeaderElection) -> None:
                assert e.leading

            await eventually(lambda: leads(a), timeout=10)
            async with running(b):
                await asyncio.sleep(TTL * 0.75)    # b campaigns against a live leader: nothing
                assert not b.leading and not work_b.started and b.holder == "replica-a"
                kube_cluster.kubectl("delete", "-n", namespace, "rolebinding", "leases-a")   # a: 403 now
                await eventually(lambda: leads(b), timeout=3 * TTL)
                assert not a.leading and work_a.stopped, "the stuck leader did not stop"
                assert work_a.stopped[0] < work_b.started[0], "two leaders at once"
                assert lease(kube_cluster, namespace, name)["holderIdentity"] == "replica-b"
    finally:
        await api_a.close()
        await api_b.close()


@pytest.mark.parametrize("value", ["soon", "0.5s", "-3s"])
def test_bad_election_ttl_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TTL_ENV, value)
    with pytest.raises(ElectionError) as e:
        timing_from_env()
    assert str(e.value) == f"${TTL_ENV}={value!r} is not a duration of at least 1s (like 30s)"


def test_bad_election_ttl_is_a_one_line_error_before_any_io(tmp_path: Path) -> None:
    """``mizzen controlplane --kubeconfig`` with a bad $MIZZEN_LEADER_ELECTION_TTL: one line, exit 1, before
    it connects anywhere (the kubeconfig is never read)."""
    import os
    import subprocess
    import sys

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("not read\n")
    r = subprocess.run([sys.executable, "-m", "mizzen.controlplane", "--kubeconfig", str(kubeconfig),
                        "--state-dir", str(tmp_path / "state"), "--xds-port", "0", "--http-port", "0"],
                       env={**os.environ, TTL_ENV: "soon"}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: ${TTL_ENV}='soon' is not a duration of at least 1s (like 30s)"], r.stderr


def test_timing_is_istios() -> None:
    t = Timing()
    assert (t.lease_duration_s, t.renew_deadline_s, t.retry_period_s) == (30.0, 15.0, 7.5)
    assert Timing.from_ttl(8) == Timing(8, 4, 2)
