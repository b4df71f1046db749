"""The Deployment controller of the local mesh (the ReplicaSet/kubelet part of ``mizzen demo``): keeps the
runner's Deployments and namespace labels equal to the control plane's, which runs as its own process.

It follows the control plane's config feed over HTTP like a Kubernetes informer: list (``GET
/apis/objects``), then long-poll ``GET /apis/events`` from the last sequence number; when the control plane
restarted (a new epoch) or the feed cannot say what was missed, it lists again and reconciles everything.
While the control plane is away it retries quietly; the running pods are not touched. Every changed object
is also handed to ``on_change`` (the demo's ``config: ...`` console lines). Its requests carry the API token
``token``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import httpx

from mizzen.controlplane.store import ApplyResult
from mizzen.runner.runner import LocalRunner

log = logging.getLogger("mizzen.runner")

__all__ = ["DeploymentController"]

POLL_S = 20.0          # long-poll length
RETRY_S = 0.2          # pause after a failed request (control plane away)


class DeploymentController:
    def __init__(self, api_url: str, runner: LocalRunner,
                 on_change: Callable[[list[ApplyResult]], None] | None = None, *,
                 token: str | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.runner = runner
        self.on_change = on_change
        self.epoch: str | None = None
        self.seq = 0
        self.resyncs = 0             # full lists done (the first one included)
        self._client = httpx.AsyncClient(trust_env=False, timeout=POLL_S + 10,
                                         headers={"Authorization": f"Bearer {token}"} if token else None)
        self._task: asyncio.Task[None] | None = None

    async def _objects(self, kind: str) -> list[dict[str, Any]]:
        r = await self._client.get(f"{self.api_url}/apis/objects", params={"kind": kind})
        r.raise_for_status()
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def sync_all(self) -> None:
        """List Namespaces and Deployments and make the runner match (creating, updating, deleting)."""
        r = await self._client.get(f"{self.api_url}/apis/events", params={"timeout": 0})
        r.raise_for_status()
        feed = r.json()
        namespaces, deployments = await self._objects("Namespace"), await self._objects("Deployment")
        for namespace in namespaces:
            meta = namespace.get("metadata") or {}
            self.runner.set_namespace_labels(str(meta.get("name")), meta.get("labels") or {})
        await self.runner.apply(deployments)
        wanted = {((d.get("metadata") or {}).get("namespace") or "", (d.get("metadata") or {}).get("name"))
                  for d in deployments}
        for ns, name in [k for k in self.runner.deployments if k not in wanted]:
            await self.runner.delete_deployment(ns, name)
        self.epoch, self.seq = feed["epoch"], int(feed["seq"])
        self.resyncs += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="deployment-controller")

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except (httpx.HTTPError, ValueError, KeyError) as e:
                log.debug("config feed: %s; retrying", e)
                await asyncio.sleep(RETRY_S)
            except Exception as e:      # a bad Deployment must not take the demo down
                log.error("reconciling deployments failed: %s", e)
                await asyncio.sleep(RETRY_S)

    async def _follow(self) -> None:
        params: dict[str, str | int | float] = {"since": self.seq, "timeout": POLL_S}
        if self.epoch:
            params["epoch"] = self.epoch
        r = await self._client.get(f"{self.api_url}/apis/events", params=params)
        r.raise_for_status()
        feed = r.json()
        if feed["reset"]:
            if self.epoch is not None:
                log.info("control plane restarted (config feed %s -> %s): listing again", self.epoch,
                         feed["epoch"])
            await self.sync_all()
            return
        results = [ApplyResult(e["kind"], e["namespace"], e["name"], e["action"]) for e in feed["events"]]
        self.seq = int(feed["seq"])
        if results and self.on_change is not None:
            self.on_change(results)
        await self._reconcile(results)

    async def _reconcile(self, results: list[ApplyResult]) -> None:
        for r in results:
            if r.kind == "Namespace":
                items = await self._get(r.kind, "", r.name)
                labels = (items[0].get("metadata") or {}).get("labels") or {} if items else {}
                self.runner.set_namespace_labels(r.name, labels)
            if r.kind != "Deployment":
                continue
            items = await self._get(r.kind, r.namespace, r.name)
            if items:
                await self.runner.apply(items)
            else:
                await self.runner.delete_deployment(r.namespace, r.name)

    async def _get(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
        r = await self._client.get(f"{self.api_url}/apis/objects",
                                   params={"kind": kind, "namespace": namespace, "name": name})
        r.raise_for_status()
        items: list[dict[str, Any]] = r.json()["items"]
        return [i for i in items if (i.get("metadata") or {}).get("name") == name]

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.aclose()
