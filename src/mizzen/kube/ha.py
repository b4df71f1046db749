"""The control plane's leader-only work on a cluster: one Lease election per kind of work, as istiod runs one
per controller, so replicas may lead different ones.

:class:`LeaderWork` owns the elections (created on first use, all in the control plane's namespace and all
held by the same identity) and runs them until cancelled. The control plane adds the ``istio-ca-root-cert``
publisher under :data:`~mizzen.kube.leader.NAMESPACE_CONTROLLER`; the webhooks' caBundle patcher belongs
under :data:`~mizzen.kube.leader.VALIDATION_CONTROLLER`, the analysis messages in config objects' status
(:mod:`mizzen.kube.status`) under :data:`~mizzen.kube.leader.ANALYZE_CONTROLLER`, and the distribution status
(:mod:`mizzen.kube.distribution`) under :data:`~mizzen.kube.leader.STATUS_CONTROLLER`
(``leader_work.add(election, name, coroutine_factory)``, before or after start).
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from kubernetes_asyncio import client

from mizzen.kube.leader import LeaderElection, RunFunction, Timing

__all__ = ["LeaderWork", "system_namespace"]


def system_namespace(fallback: str = "istio-system") -> str:
    """The control plane's own namespace: ``$POD_NAMESPACE`` (istiod's), else ``fallback`` (the mesh's root
    namespace, which istiod's defaults to its own)."""
    return os.environ.get("POD_NAMESPACE", "").strip() or fallback


class LeaderWork:
    def __init__(self, api: client.ApiClient, namespace: str, identity: str, timing: Timing) -> None:
        self.api = api
        self.namespace = namespace
        self.identity = identity
        self.timing = timing
        self.elections: dict[str, LeaderElection] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False

    def add(self, election: str, name: str, fn: RunFunction) -> LeaderElection:
        """Run ``fn()`` while this replica holds the Lease ``election``."""
        e = self.elections.get(election)
        if e is None:
            e = self.elections[election] = LeaderElection(self.api, self.namespace, election, self.identity,
                                                          self.timing)
            if self._running:
                self._start(e)
        e.add_run_function(name, fn)
        return e

    def _start(self, e: LeaderElection) -> None:
        self._tasks[e.name] = asyncio.create_task(e.run(), name=f"leader election {e.name}")

    def leading(self) -> list[str]:
        """The elections this replica leads now."""
        return sorted(name for name, e in self.elections.items() if e.leading)

    async def run(self) -> None:
        self._running = True
        for e in self.elections.values():
            self._start(e)
        try:
            await asyncio.Event().wait()
        finally:
            self._running = False
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            for task in tasks:     # each releases its Lease as it ends
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._tasks.clear()
