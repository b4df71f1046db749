"""The xDS tests' server harness type (shared by the fixture in conftest.py and the tests' annotations)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from mizzen.xds import AdsServer, SnapshotCache
from mizzen.xds.resources import ResourceSet

HOST = "127.71.0.1"



@dataclass
class Harness:
    cache: SnapshotCache
    ads: AdsServer
    grpc_server: grpc.aio.Server
    target: str
    connects: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    disconnects: list[str] = field(default_factory=list)
    # what on_connect puts in the cache for a node (None: leave the cache alone)
    on_connect_snapshot: Callable[[str], ResourceSet | None] = lambda _n: None
