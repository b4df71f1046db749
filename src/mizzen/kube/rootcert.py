"""The ``istio-ca-root-cert`` ConfigMap in every namespace (Istio's namespace controller): leader-only work.

Each namespace gets a ConfigMap ``istio-ca-root-cert`` (label ``istio.io/config: "true"``) whose key
``root-cert.pem`` is the mesh's root bundle, which injected pods mount to verify the control plane. The
publisher watches Namespaces and the ConfigMaps of that name (a field selector), and reconciles a namespace
whenever it appears or its ConfigMap is changed or deleted: it creates the ConfigMap, or writes the key back
(other keys are left alone, as Istio's ``InsertDataToConfigMap``). Kubernetes' own namespaces
(:data:`IGNORED_NAMESPACES`, Istio's list) and terminating ones are skipped. Failed writes are retried with
backoff. :meth:`RootCertPublisher.resync` re-checks every namespace (after a root change).

With meshConfig ``discoverySelectors`` (a :class:`~mizzen.kube.discovery.NamespaceFilter`) only the
selected namespaces get it, as in Istio; a namespace selected later gets it then (one deselected keeps its
ConfigMap: nothing is deleted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kubernetes_asyncio import client

from mizzen.kube.discovery import NamespaceFilter
from mizzen.kube.reflector import Backoff, Reflector, ResourceType
from mizzen.kube.rest import Object, call, status_of

__all__ = ["CONFIGMAP", "DATA_KEY", "IGNORED_NAMESPACES", "RootCertPublisher"]

log = logging.getLogger(__name__)

CONFIGMAP = "istio-ca-root-cert"
DATA_KEY = "root-cert.pem"
LABELS = {"istio.io/config": "true"}
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage"})

_NAMESPACES = ResourceType("", "v1", "namespaces")
_CONFIGMAPS = ResourceType("", "v1", "configmaps")


class _Index:
    """One reflector's objects by a key, telling the publisher which namespaces to look at."""

    def __init__(self, key: Callable[[Object], str], dirty: Callable[[set[str]], None]) -> None:
        self.items: dict[str, Object] = {}
        self._key = key
        self._dirty = dirty

    def replace(self, objects: list[Object]) -> None:
        old = set(self.items)
        self.items = {self._key(o): o for o in objects}
        self._dirty(old | set(self.items))

    def upsert(self, obj: Object) -> None:
        self.items[self._key(obj)] = obj
        self._dirty({self._key(obj)})

    def delete(self, obj: Object) -> None:
        self.items.pop(self._key(obj), None)
        self._dirty({self._key(obj)})


class RootCertPublisher:
    """Keeps ``istio-ca-root-cert`` in every namespace equal to ``root_cert()`` until cancelled."""

    def __init__(self, api: client.ApiClient, root_cert: Callable[[], str],
                 namespaces: NamespaceFilter | None = None) -> None:
        self.api = api
        self.root_cert = root_cert
        self.filter = namespaces
        self.namespaces = _Index(lambda o: o["metadata"]["name"], self._mark)
        self.configmaps = _Index(lambda o: o["metadata"]["namespace"], self._mark)
        self.writes = 0                  # ConfigMaps created or written back
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._backoff = Backoff(initial=0.2, maximum=10.0)
        if namespaces is not None:
            namespaces.add_listener(
                lambda changed: self._mark(set(self.namespaces.items) if changed is None else set(changed)))

    def _mark(self, names: set[str]) -> None:
        if names:
            self._dirty |= names
            self._wake.set()

    def resync(self) -> None:
        self._mark(set(self.namespaces.items))

    async def run(self) -> None:
        ns_reflector = Reflector(self.api, _NAMESPACES, self.namespaces)
        cm_reflector = Reflector(self.api, _CONFIGMAPS, self.configmaps,
                                 field_selector=f"metadata.name={CONFIGMAP}")
        tasks = [asyncio.create_task(r.run(), name=f"root cert: {r.resource}")
                 for r in (ns_reflector, cm_reflector)]
        try:
            await ns_reflector.synced.wait()
            await cm_reflector.synced.wait()
            log.info("publishing %s to %d namespaces", CONFIGMAP, len(self.namespaces.items))
            await self._work()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._dirty = self._dirty, set()
            failed: set[str] = set()
            for ns in sorted(batch):
                try:
                    await self._reconcile(ns)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    status = status_of(e)
                    log.warning("%s in namespace %s: %s; retrying", CONFIGMAP, ns,
                                f"API server answered {status}" if status else f"{type(e).__name__}: {e}")
                    failed.add(ns)
            if failed:
                await asyncio.sleep(self._backoff.delay())
                self._mark(failed)
            else:
                self._backoff.reset()

    async def _reconcile(self, ns: str) -> None:
        namespace = self.namespaces.items.get(ns)
        if namespace is None or ns in IGNORED_NAMESPACES:
            return
        if self.filter is not None and not self.filter.admits(ns):
            return
        if (namespace.get("status") or {}).get("phase") == "Terminating":
            return
        root = self.root_cert()
        cm = self.configmaps.items.get(ns)
        path = f"/api/v1/namespaces/{ns}/configmaps"
        if cm is None:
            body = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": CONFIGMAP, "namespace": ns, "labels": dict(LABELS)},
                    "data": {DATA_KEY: root}}
            try:
                created = await call(self.api, "POST", path, body)
            except Exception as e:
                if status_of(e) != 409:
                    raise
                cm = await call(self.api, "GET", f"{path}/{CONFIGMAP}")   # the watch has not told us yet
            else:
                self.writes += 1
                self.configmaps.items[ns] = created
                log.info("created %s/%s", ns, CONFIGMAP)
                return
        if (cm.get("data") or {}).get(DATA_KEY) == root:
            return
        cm = dict(cm)
        cm["data"] = {**(cm.get("data") or {}), DATA_KEY: root}
        updated = await call(self.api, "PUT", f"{path}/{CONFIGMAP}", cm)   # with its resourceVersion
        self.writes += 1
        self.configmaps.items[ns] = updated
        log.info("wrote the root certificate back into %s/%s", ns, CONFIGMAP)
