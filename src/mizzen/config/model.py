"""The immutable configuration model shared by the store, the validators and the translation core.

A :class:`Config` is one applied object (an Istio CR or a Kubernetes object such as Service); its ``spec`` is
plain JSON-like data that has passed validation. A :class:`ConfigSnapshot` is the whole store at one instant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class Source:
    """Where an object (or one of its fields) came from: file name and 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, order=True)
class ConfigKey:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Config:
    """One validated object. ``spec`` must be treated as read-only."""

    kind: str
    api_version: str
    name: str
    namespace: str
    spec: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    source: Source | None = None
    # creation order (seconds since epoch, set by the store); Istio orders same-host VirtualServices by it
    created: float = field(default=0.0, compare=False, hash=False)
    # field path ("spec.http[0].route[1].weight") -> line, for messages about this object after load
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def key(self) -> ConfigKey:
        return ConfigKey(self.kind, self.namespace, self.name)

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def content_hash(self) -> str:
        """Stable hash of what matters for behaviour (kind, identity, labels, annotations, spec); computed
        once per object (it is immutable) and kept across :meth:`with_created` and pickling."""
        cached: str | None = self.__dict__.get("_content_hash")
        if cached is None:
            body = json.dumps(
                [self.kind, self.namespace, self.name, dict(self.labels), dict(self.annotations), self.spec],
                sort_keys=True,
                separators=(",", ":"),
                default=str,
            )
            cached = hashlib.sha256(body.encode()).hexdigest()[:16]
            object.__setattr__(self, "_content_hash", cached)
        return cached

    def spec_fields(self) -> frozenset[str]:
        """Every field name (mapping key) anywhere in ``spec``; computed once per object (it is immutable)."""
        cached: frozenset[str] | None = self.__dict__.get("_spec_fields")
        if cached is None:
            found: set[str] = set()
            stack: list[Any] = [self.spec]
            while stack:
                value = stack.pop()
                if isinstance(value, Mapping):
                    found.update(str(k) for k in value)
                    stack.extend(value.values())
                elif isinstance(value, (list, tuple)):
                    stack.extend(value)
            cached = frozenset(found)
            object.__setattr__(self, "_spec_fields", cached)
        return cached

    def with_created(self, created: float) -> Config:
        """This object with another creation time (which the content hash does not cover)."""
        new = dataclasses.replace(self, created=created)
        for cache in ("_content_hash", "_record_json", "_spec_fields"):
            if cache in self.__dict__:
                object.__setattr__(new, cache, self.__dict__[cache])
        return new

    def to_manifest(self) -> dict[str, Any]:
        """The object as a Kubernetes-style manifest (what ``get -o yaml`` prints)."""
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            meta["labels"] = dict(self.labels)
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta, "spec": self.spec}


@dataclass(frozen=True)
class ConfigSnapshot:
    """Every applied object at one instant, indexed by kind. Immutable; build a new one per change."""

    by_kind: Mapping[str, tuple[Config, ...]] = field(default_factory=dict)
    version: str = "empty"

    @staticmethod
    def of(configs: Iterable[Config]) -> ConfigSnapshot:
        grouped: dict[str, list[Config]] = {}
        for c in configs:
            grouped.setdefault(c.kind, []).append(c)
        by_kind = {k: tuple(sorted(v, key=lambda c: (c.namespace, c.name))) for k, v in grouped.items()}
        digest = hashlib.sha256()
        for kind in sorted(by_kind):
            for c in by_kind[kind]:
                digest.update(c.content_hash().encode())
        return ConfigSnapshot(by_kind=by_kind, version=digest.hexdigest()[:12])

    def list(self, kind: str, namespace: str | None = None) -> tuple[Config, ...]:
        items = self.by_kind.get(kind, ())
        if namespace is None:
            return items
        return tuple(c for c in items if c.namespace == namespace)

    def get(self, kind: str, namespace: str, name: str) -> Config | None:
        return self._index.get((kind, namespace, name))

    def spec_fields(self, kind: str) -> frozenset[str]:
        """Every field name anywhere in the specs of ``kind``'s objects, indexed once per snapshot."""
        return self._spec_fields.get(kind, frozenset())

    @cached_property
    def _spec_fields(self) -> dict[str, frozenset[str]]:
        return {kind: frozenset().union(*(c.spec_fields() for c in items))
                for kind, items in self.by_kind.items()}

    @cached_property
    def _index(self) -> dict[tuple[str, str, str], Config]:
        """(kind, namespace, name) -> object, built on the first lookup (a push checks thousands)."""
        index: dict[tuple[str, str, str], Config] = {}
        for items in self.by_kind.values():
            for c in items:
                index.setdefault((c.kind, c.namespace, c.name), c)   # the first one, as a scan finds it
        return index

    def __iter__(self) -> Iterator[Config]:
        for kind in sorted(self.by_kind):
            yield from self.by_kind[kind]

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_kind.values())
