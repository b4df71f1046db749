"""The Kubernetes config source: Istio's custom resources and Services from an API server, mirrored into the
control plane's config store (any :class:`Store`, i.e. ``controlplane.store.ConfigStore``, which then pushes
as for any apply).

One :class:`~mizzen.kube.reflector.Reflector` per kind watches it across namespaces at the version Mizzen
prefers. Each object is read through the same loader and validators as ``mizzen apply`` (only
``apiVersion``, ``kind``, ``metadata.name/namespace/labels/annotations`` and ``spec`` are kept; the server's
bookkeeping fields are dropped). An object that fails validation never reaches a proxy: its previous valid
version, if any, keeps serving, and it is listed in :attr:`KubeConfigSource.rejected` with the reason
(Istio's validating webhook normally refuses it before it is stored). A (re)list replaces the kind's whole
set, so deletions missed while the watch was down are applied too. With meshConfig ``discoverySelectors``
(a :class:`~mizzen.kube.discovery.NamespaceFilter`) only the selected namespaces' objects reach the store;
every object is kept as read, so a namespace selected or deselected later is added or removed at once.
The ``status`` of each Istio object is kept as read too (:attr:`KubeConfigSource.statuses`), for the
status writers (:mod:`mizzen.kube.status`, :mod:`mizzen.kube.distribution`) to compare with before they
write, and the ``metadata.generation`` of the version the store holds (:attr:`KubeConfigSource.generations`).
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes_asyncio import client

from mizzen.config import kinds
from mizzen.config.errors import ConfigError
from mizzen.config.loader import load_object
from mizzen.config.model import Config, ConfigKey
from mizzen.kube.discovery import NamespaceFilter
from mizzen.kube.reflector import Reflector, Reflectors, ResourceType

__all__ = ["WATCHED_KINDS", "KubeConfigSource", "Rejected", "Store", "essentials"]

log = logging.getLogger(__name__)


def _secret_kind() -> kinds.Kind:
    """Secrets (gateway ``credentialName``) come through the config path like any kind, so whatever reads
    them from the store (the SDS generator) sees the cluster's: the registered kind, else the passive one."""
    found = kinds.BY_NAME.get("Secret") or next(k for k in kinds.PASSIVE if k.kind == "Secret")
    return found


# what istiod reads as config from the API server (the registry part — endpoints, pods — comes separately,
# see mizzen.kube.registry_source)
WATCHED_KINDS: tuple[kinds.Kind, ...] = (*(k for k in kinds.ALL_KINDS if k.istio), kinds.SERVICE,
                                         _secret_kind())
# top-level fields of an API object that are bookkeeping, not content (kinds with no ``spec``, like Secret,
# keep the rest: ``type``, ``data``...)
_BOOKKEEPING = frozenset({"apiVersion", "kind", "metadata", "status"})
# as istiod's credentials controller: never service-account tokens or Helm's release records
FIELD_SELECTORS = {"Secret": "type!=kubernetes.io/service-account-token,type!=helm.sh/release.v1"}


class Store(Protocol):
    """What the source needs of the config store: all-or-nothing apply (raising ConfigError), delete, list."""

    def apply(self, configs: Iterable[Config], *, dry_run: bool = False) -> builtins.list[Any]: ...

    def delete(self, keys: Iterable[ConfigKey], *, dry_run: bool = False) -> builtins.list[Any]: ...

    def list(self, kind: str | None = None, namespace: str | None = None,
             name: str | None = None) -> builtins.list[Config]: ...


@dataclass(frozen=True)
class Rejected:
    key: ConfigKey
    reason: str


def _generation(obj: dict[str, Any]) -> int | None:
    value = (obj.get("metadata") or {}).get("generation")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _resource(kind: kinds.Kind) -> ResourceType:
    return ResourceType(kind.group, kind.versions[0], kind.plural)


def essentials(obj: dict[str, Any]) -> dict[str, Any]:
    """What Mizzen reads of an API object (also the admission webhook): apiVersion, kind, name, namespace,
    labels, annotations and the content; bookkeeping (status, uid, managedFields...) dropped."""
    meta = obj.get("metadata") or {}
    kept: dict[str, Any] = {"name": meta.get("name", "")}
    if meta.get("namespace"):
        kept["namespace"] = meta["namespace"]
    for field in ("labels", "annotations"):
        if meta.get(field):
            kept[field] = meta[field]
    out: dict[str, Any] = {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""),
                           "metadata": kept}
    if "spec" in obj:
        out["spec"] = obj["spec"]
    else:
        out.update((k, v) for k, v in obj.items() if k not in _BOOKKEEPING)
    return out


class _KindHandler:
    """Applies one kind's list/watch events to the store; keeps what Mizzen reads of each object, so that a
    change of the discovery namespaces can add or remove them without a re-list."""

    def __init__(self, source: KubeConfigSource, kind: kinds.Kind) -> None:
        self.source = source
        self.kind = kind
        self.objects: dict[ConfigKey, dict[str, Any]] = {}
        self.generations: dict[ConfigKey, int] = {}   # metadata.generation of each object as read

    def _key(self, obj: dict[str, Any]) -> ConfigKey:
        meta = obj.get("metadata") or {}
        return ConfigKey(self.kind.kind, meta.get("namespace", ""), meta.get("name", ""))

    def replace(self, objects: list[dict[str, Any]]) -> None:
        self.objects = {self._key(o): essentials(o) for o in objects}
        self.generations = {self._key(o): g for o in objects if (g := _generation(o)) is not None}
        if self.kind.istio:
            statuses = self.source.statuses
            for key in [k for k in statuses if k.kind == self.kind.kind and k not in self.objects]:
                del statuses[key]
            for o in objects:
                self.source.note_status(self._key(o), o)
        self.resync()

    def resync(self, namespaces: frozenset[str] | None = None) -> None:
        """The store's objects of this kind (in ``namespaces``, or all) made what the API server has of the
        discovery namespaces."""
        admits = self.source.admits
        wanted: list[dict[str, Any]] = []
        for key, obj in self.objects.items():
            if namespaces is not None and key.namespace not in namespaces:
                continue
            if admits(key.namespace):
                wanted.append(obj)
            else:
                self.source.rejected.pop(key, None)   # not read at all now
        configs = [c for c in map(self.source.convert, wanted) if c is not None]
        present = {c.key for c in configs}
        stale = [c.key for c in self.source.store.list(self.kind.kind)
                 if c.key not in present and (namespaces is None or c.key.namespace in namespaces)]
        self.source.apply(configs, self.generations)
        if stale:
            self.source.store.delete(stale)
            for key in stale:
                self.source.generations.pop(key, None)

    def upsert(self, obj: dict[str, Any]) -> None:
        key = self._key(obj)
        self.objects[key] = essentials(obj)
        generation = _generation(obj)
        if generation is not None:
            self.generations[key] = generation
        if self.kind.istio:
            self.source.note_status(key, obj)
        if not self.source.admits(key.namespace):
            return
        config = self.source.convert(obj)
        if config is not None:
            self.source.apply([config], self.generations)

    def delete(self, obj: dict[str, Any]) -> None:
        key = self._key(obj)
        self.objects.pop(key, None)
        self.generations.pop(key, None)
        self.source.generations.pop(key, None)
        self.source.statuses.pop(key, None)
        self.source.rejected.pop(key, None)
        self.source.store.delete([key])


class KubeConfigSource(Reflectors):
    """Mirror ``kinds_`` from the API server into ``store`` while :meth:`run` runs; with ``namespaces``
    (meshConfig ``discoverySelectors``) only the objects of the namespaces it admits."""

    def __init__(self, api: client.ApiClient, store: Store,
                 kinds_: Iterable[kinds.Kind] = WATCHED_KINDS, *, watch_timeout_s: int = 300,
                 namespaces: NamespaceFilter | None = None) -> None:
        self.store = store
        self.rejected: dict[ConfigKey, Rejected] = {}
        # the ``status`` of each Istio object as last read (the analysis status writer compares with it)
        self.statuses: dict[ConfigKey, dict[str, Any]] = {}
        # the metadata.generation of the version of each object the store holds (set when it is applied)
        self.generations: dict[ConfigKey, int] = {}
        self.on_status: Callable[[], None] | None = None   # called when a read status differs from the last
        self.namespaces = namespaces
        timeout = watch_timeout_s
        self.handlers = [_KindHandler(self, k) for k in kinds_]
        self.reflectors = [Reflector(api, _resource(h.kind), h, watch_timeout_s=timeout,
                                     field_selector=FIELD_SELECTORS.get(h.kind.kind, ""))
                           for h in self.handlers]
        if namespaces is not None:
            namespaces.add_listener(self._namespaces_changed)

    def note_status(self, key: ConfigKey, obj: dict[str, Any]) -> None:
        status = obj.get("status") or {}
        if not isinstance(status, dict):
            status = {}
        if self.statuses.get(key) != status:
            self.statuses[key] = status
            if self.on_status is not None:
                self.on_status()

    def admits(self, namespace: str) -> bool:
        return self.namespaces is None or self.namespaces.admits(namespace)

    def _namespaces_changed(self, changed: frozenset[str] | None) -> None:
        for h in self.handlers:
            h.resync(changed)

    # -- conversion and application
    def convert(self, obj: dict[str, Any]) -> Config | None:
        """The validated Config for one API object, or None (recorded in :attr:`rejected`)."""
        doc = essentials(obj)
        meta = doc["metadata"]
        kind = doc["kind"]
        key = ConfigKey(kind, meta.get("namespace", ""), meta.get("name", ""))
        known = kinds.BY_NAME.get(kind)
        where = f"{known.plural}/{key.namespace}/{key.name}" if known else str(key)
        result = load_object(doc, file=where)   # structure and every validator, as for `mizzen apply`
        if result.errors or not result.configs:
            self._reject(key, "; ".join(str(i) for i in result.errors) or "not a supported object")
            return None
        self.rejected.pop(key, None)
        return result.configs[0]

    def apply(self, configs: list[Config], generations: Mapping[ConfigKey, int] | None = None) -> None:
        if not configs:
            return
        try:
            self.store.apply(configs)
        except ConfigError as e:   # validated one by one above; a cross-object error lands here
            for c in configs:
                self._reject(c.key, str(e))
            return
        for c in configs:
            generation = (generations or {}).get(c.key)
            if generation is not None:
                self.generations[c.key] = generation

    def _reject(self, key: ConfigKey, reason: str) -> None:
        if self.rejected.get(key, Rejected(key, "")).reason != reason:
            log.warning("rejected %s from the API server (the previous valid version, if any, keeps "
                        "serving): %s", key, reason)
        self.rejected[key] = Rejected(key, reason)
