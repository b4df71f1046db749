"""The seam between the runner and the control plane: :class:`WorkloadRegistrar` (register a ready replica,
deregister it when it stops or crashes), with adapters for an in-process control plane and for its HTTP API
(``POST /apis/workloads``, ``DELETE /apis/workloads/{ns}/{name}``), which hold the API token: the runner is
what registers workloads, and it names only the pod IPs it allocated.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable
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


class HttpRegistrar:
    """Registers workloads through the control plane's HTTP API at ``base_url`` (e.g. http://127.0.0.1:15014)
    with the API token ``token`` (default: found like the CLI does, see :func:`find_token`)."""

    def __init__(self, base_url: str, timeout_s: float = 5.0, *, token: str | None = None,
                 token_file: Path | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        source = find_token(token_file) if token is None else None
        self._token = token if token is not None else (source.token if source else None)
        self._headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}

    async def register(self, workload: Workload) -> None:
        body = dataclasses.asdict(workload)
        body["labels"], body["ports"] = dict(workload.labels), dict(workload.ports)
        async with (
            aiohttp.ClientSession(timeout=self.timeout, headers=self._headers) as s,
            s.post(f"{self.base_url}/apis/workloads", json=body) as r,
        ):
            if r.status >= 300:
                who = f"{workload.namespace}/{workload.name}"
                raise RuntimeError(f"register {who}: {r.status} {await r.text()}")

    async def deregister(self, namespace: str, name: str) -> None:
        async with (
            aiohttp.ClientSession(timeout=self.timeout, headers=self._headers) as s,
            s.delete(f"{self.base_url}/apis/workloads/{namespace}/{name}") as r,
        ):
            if r.status >= 300 and r.status != 404:
                raise RuntimeError(f"deregister {namespace}/{name}: {r.status} {await r.text()}")
