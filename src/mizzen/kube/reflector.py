"""List and watch one Kubernetes resource type across all namespaces, like client-go's Reflector.

A :class:`Reflector` lists the type (one consistent ``resourceVersion``), hands the whole list to its
handler's ``replace``, then watches from that version with bookmarks, handing each change to
``upsert``/``delete``. When a watch ends (server timeout, connection lost, API server restarted) it watches
again from the last version seen (bookmarks move it forward without changes); when the server answers 410
Gone (that version has been compacted away) it lists again, so the handler's view is complete and current
again without losing a deletion. Errors other than 410 are retried with capped, jittered exponential
backoff. It knows the API's protocol, not the mesh: objects are plain JSON dicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = ["Backoff", "Handler", "Reflector", "Reflectors", "ResourceType"]

log = logging.getLogger(__name__)

Object = dict[str, Any]


@dataclass(frozen=True)
class ResourceType:
    """A resource collection: ``group`` is "" for the core API."""
    group: str
    version: str
    plural: str

    @property
    def path(self) -> str:
        if self.group:
            return f"/apis/{self.group}/{self.version}/{self.plural}"
        return f"/api/{self.version}/{self.plural}"

    def __str__(self) -> str:
        return f"{self.plural}.{self.group or 'core'}/{self.version}"


class Handler(Protocol):
    def replace(self, objects: list[Object]) -> None:
        """The complete current list (after a (re)list): everything not in it is gone."""

    def upsert(self, obj: Object) -> None:
        """An object was added or modified."""

    def delete(self, obj: Object) -> None:
        """An object was deleted (its last state)."""


class _Gone(Exception):
    """The watched resourceVersion is too old (410): list again."""


@dataclass
class Backoff:
    """Capped exponential backoff with jitter (seconds)."""
    initial: float = 0.2
    maximum: float = 10.0
    _next: float = 0.0

    def reset(self) -> None:
        self._next = 0.0

    def delay(self) -> float:
        self._next = self.initial if self._next == 0 else min(self._next * 2, self.maximum)
        return self._next * random.uniform(0.8, 1.2)


class Reflector:
    """Keeps ``handler`` in step with the API server's ``resource`` collection until cancelled."""

    def __init__(self, api: client.ApiClient, resource: ResourceType, handler: Handler, *,
                 watch_timeout_s: int = 300, backoff: Backoff | None = None, resume_from: str = "",
                 field_selector: str = "", label_selector: str = "") -> None:
        """``resume_from``: a resourceVersion to watch from before any list (a restarted client's last known
        version); when the server no longer has it (410), the reflector lists as usual. ``field_selector``
        narrows the collection (e.g. ``spec.nodeName=node-1``, as a kubelet watches its pods), and so does
        ``label_selector`` (e.g. ``internal.istio.io/distribution-report=true``)."""
        self.api = api
        self.resource = resource
        self.handler = handler
        self.watch_timeout_s = watch_timeout_s
        self.backoff = backoff or Backoff()
        self.resource_version = resume_from
        self.field_selector = field_selector
        self.label_selector = label_selector
        self.synced = asyncio.Event()   # set once the first list has been handed over
        self.lists = 0                  # how many times it listed (the first, then one per 410 or failure)

    async def run(self) -> None:
        need_list = not self.resource_version
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
                self.backoff.reset()
            except asyncio.CancelledError:
                raise
            except _Gone as e:
                log.info("%s: %s; listing again", self.resource, e)
                need_list = True
            except ApiException as e:
                if e.status == 410:
                    log.info("%s: 410 Gone; listing again", self.resource)
                    need_list = True
                    continue
                delay = self.backoff.delay()
                log.warning("%s: %s; retrying in %.1fs", self.resource, _one_line(e), delay)
                await asyncio.sleep(delay)
            except Exception as e:
                delay = self.backoff.delay()
                log.warning("%s: %s; retrying in %.1fs", self.resource, _one_line(e), delay)
                await asyncio.sleep(delay)

    async def _get(self, query: list[tuple[str, str]]) -> Any:
        if self.field_selector:
            query = [*query, ("fieldSelector", self.field_selector)]
        if self.label_selector:
            query = [*query, ("labelSelector", self.label_selector)]
        resp = await self.api.call_api(
            self.resource.path, "GET", query_params=query, auth_settings=["BearerToken"],
            _preload_content=False, _return_http_data_only=True,
            _request_timeout=self.watch_timeout_s + 30)
        if not 200 <= resp.status < 300:   # with _preload_content=False the library does not check: we do
            try:
                body = (await resp.read()).decode("utf-8", "replace")
            finally:
                resp.release()
            raise ApiException(status=resp.status, reason=_status_message(body) or resp.reason)
        return resp

    async def _list(self) -> None:
        resp = await self._get([])
        try:
            body = json.loads(await resp.read())
        finally:
            resp.release()
        items: list[Object] = body.get("items") or []
        for item in items:   # list items carry no kind/apiVersion; watch events do
            item.setdefault("kind", body.get("kind", "").removesuffix("List"))
            item.setdefault("apiVersion", body.get("apiVersion", ""))
        self.resource_version = body["metadata"]["resourceVersion"]
        self.lists += 1
        self.handler.replace(items)
        self.synced.set()

    async def _watch(self) -> None:
        """One watch call from the last version seen, until the server ends it."""
        resp = await self._get([
            ("watch", "true"), ("resourceVersion", self.resource_version), ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self.watch_timeout_s)),
        ])
        try:
            while True:
                line = await resp.content.readline()
                if not line:
                    return
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = obj.get("code")
                    if code == 410:
                        raise _Gone(obj.get("message", "410 Gone"))
                    raise RuntimeError(f"watch error {code}: {obj.get('message', '')}")
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    self.resource_version = rv
                if kind in ("ADDED", "MODIFIED"):
                    self.handler.upsert(obj)
                elif kind == "DELETED":
                    self.handler.delete(obj)
        finally:
            resp.release()


class Reflectors:
    """Several reflectors run and synced as one (the informer set of a source): subclasses fill
    :attr:`reflectors` in their ``__init__``."""

    reflectors: list[Reflector]

    async def run(self) -> None:
        """Run every reflector until cancelled."""
        tasks = [asyncio.create_task(r.run(), name=f"reflector {r.resource}") for r in self.reflectors]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    async def wait_synced(self, timeout: float = 30.0) -> None:
        """Until every reflector has listed once (istiod's HasSynced)."""
        async with asyncio.timeout(timeout):
            for r in self.reflectors:
                await r.synced.wait()


def _status_message(body: str) -> str:
    """The ``message`` of a Kubernetes Status body, or ""."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("message", "")) if isinstance(data, dict) else ""


def _one_line(e: Exception) -> str:
    if isinstance(e, ApiException):
        return f"API server answered {e.status} {e.reason}".strip()
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
