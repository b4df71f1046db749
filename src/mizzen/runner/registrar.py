"""The seam between the runner and the control plane: :class:`WorkloadRegistrar` (register a ready replica,
deregister it when it stops or crashes), with adapters for an in-process control plane and for its HTTP API
(``POST /apis/workloads``, ``DELETE /apis/workloads/{ns}/{name}``, and ``PUT /apis/workloads`` with the
complete set when the control plane comes back: :meth:`HttpRegistrar.resync`), which hold the API token: the
runner is what registers workloads, and it names only the pod IPs it allocated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from mizzen.auth.token import find_token
from mizzen.registry.model import Workload


class WorkloadRegistrar(Protocol):
    """Methods may be plain or ``async``; the runner awaits whatever they return."""

    def register(self, workload: Workload) -> Awaitable[None] | None: ...

    def deregister(self, namespace: str, name: str) -> Awaitable[None] | None: ...


async def call(result: Awaitable[None] | None) -> None:
    if inspect.isawaitable(result):
        await result


class InProcessRegistrar:
    """Adapts anything with ``register_workload(w)`` / ``remove_workload(ns, name)`` (the ControlPlane, the
    Registry) to :class:`WorkloadRegistrar`."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def register(self, workload: Workload) -> None:
        self.target.register_workload(workload)

    def deregister(self, namespace: str, name: str) -> None:
        self.target.remove_workload(namespace, name)


def workload_to_json(workload: Workload) -> dict[str, Any]:
    body = dataclasses.asdict(workload)
    body["labels"], body["ports"] = dict(workload.labels), dict(workload.ports)
    return body


class HttpRegistrar:
    """Registers workloads through the control plane's HTTP API at ``base_url`` (e.g. http://127.0.0.1:15014)
    with the API token ``token`` (default: found like the CLI does, see :func:`find_token`).

    Calls are serialized, so a :meth:`resync` (the complete set, read when it is sent) never races a single
    register or deregister."""

    def __init__(self, base_url: str, timeout_s: float = 5.0, *, token: str | None = None,
                 token_file: Path | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        source = find_token(token_file) if token is None else None
        self._token = token if token is not None else (source.token if source else None)
        self._headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        self._lock = asyncio.Lock()

    async def register(self, workload: Workload) -> None:
        async with self._lock:
            await self._register(workload)

    async def _register(self, workload: Workload) -> None:
        body = workload_to_json(workload)
        async with (
            aiohttp.ClientSession(timeout=self.timeout, headers=self._headers) as s,
            s.post(f"{self.base_url}/apis/workloads", json=body) as r,
        ):
            if r.status >= 300:
                who = f"{workload.namespace}/{workload.name}"
                raise RuntimeError(f"register {who}: {r.status} {await r.text()}")

    async def deregister(self, namespace: str, name: str) -> None:
        async with self._lock:
            await self._deregister(namespace, name)

    async def _deregister(self, namespace: str, name: str) -> None:
        async with (
            aiohttp.ClientSession(timeout=self.timeout, headers=self._headers) as s,
            s.delete(f"{self.base_url}/apis/workloads/{namespace}/{name}") as r,
        ):
            if r.status >= 300 and r.status != 404:
                raise RuntimeError(f"deregister {namespace}/{name}: {r.status} {await r.text()}")

    async def resync(self, workloads: Callable[[], Iterable[Workload]]) -> int:
        """Replace the control plane's registered workloads with ``workloads()`` (evaluated under the lock);
        returns how many were sent."""
        async with self._lock:
            items = [workload_to_json(w) for w in workloads()]
            async with (
                aiohttp.ClientSession(timeout=self.timeout, headers=self._headers) as s,
                s.put(f"{self.base_url}/apis/workloads", json={"items": items}) as r,
            ):
                if r.status >= 300:
                    raise RuntimeError(f"workload sync: {r.status} {await r.text()}")
            return len(items)
