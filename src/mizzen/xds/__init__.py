"""xDS protocol layer: snapshot cache, the ADS state machine and server (state-of-the-world and delta), sync
status and push debouncing.

It knows nonces, ACK/NACK, subscriptions and versions, not the mesh: the control plane generates a
``ResourceSet`` per proxy and hands it to :meth:`SnapshotCache.set_snapshot`.
"""

from mizzen.xds.cache import Snapshot, SnapshotCache, TypeSnapshot
from mizzen.xds.debounce import Debouncer
from mizzen.xds.server import AdsServer, OnConnect, OnDisconnect, serve
from mizzen.xds.status import NACKED, NOT_SENT, STALE, SYNCED, ProxyStatus, SyncStatus, TypeStatus

__all__ = [
    "NACKED",
    "NOT_SENT",
    "STALE",
    "SYNCED",
    "AdsServer",
    "Debouncer",
    "OnConnect",
    "OnDisconnect",
    "ProxyStatus",
    "Snapshot",
    "SnapshotCache",
    "SyncStatus",
    "TypeSnapshot",
    "TypeStatus",
    "serve",
]
