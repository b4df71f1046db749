"""Config distribution tracking: which config each connected proxy has ACKed, for Istio's ``Reconciled``
status condition (``PILOT_ENABLE_STATUS``; the writer is :mod:`mizzen.kube.distribution`).

Istio's reporter keeps a ledger of config versions and asks, per object at its current generation, how many
connected proxies ACKed a push that had it. Here the same question is answered with the store's immutable
:class:`~mizzen.config.model.ConfigSnapshot`\\ s: a push (or a proxy's first generation) records, for each
proxy it covered, the snapshot its cache entry now reflects (a proxy whose generation failed keeps its older
one); once the proxy is SYNCED (every type it subscribed ACKed at its cache's version:
:meth:`~mizzen.xds.status.SyncStatus.is_synced`), that snapshot is what it has. A proxy is up to date for an
object when the object's content in its ACKed snapshot is the stored one (a NACK never makes a proxy synced,
so a NACKing proxy stays on its last ACKed snapshot). Only a few snapshots are alive at once (the ones the
proxies are on), and nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mizzen.config.model import Config, ConfigSnapshot
from mizzen.xds.status import SyncStatus

__all__ = ["DistributionTracker"]


class DistributionTracker:
    """Fed by the control plane (:meth:`pushed`, :meth:`connected`, :meth:`disconnected`, :meth:`check` on
    every ACK); read by :meth:`progress`. ``on_progress`` is called when some proxy ACKed newer config or a
    proxy came or went."""

    def __init__(self, status: SyncStatus) -> None:
        self._status = status
        self._pushed: dict[str, ConfigSnapshot] = {}   # node -> the config its cache entry was generated from
        self._acked: dict[str, ConfigSnapshot] = {}    # node -> the config it has ACKed all of
        self.on_progress: Callable[[], None] | None = None
        self._groups: list[tuple[ConfigSnapshot, int]] | None = None   # the distinct ACKed snapshots, counted

    def connected(self, node_id: str, configs: ConfigSnapshot) -> None:
        """The node's first generation (from ``configs``) is in the cache."""
        self._pushed[node_id] = configs
        self._changed()
        self.check(node_id)

    def disconnected(self, node_id: str) -> None:
        self._pushed.pop(node_id, None)
        self._acked.pop(node_id, None)
        self._changed()

    def pushed(self, configs: ConfigSnapshot, node_ids: Iterable[str]) -> None:
        """A push from ``configs`` is in the cache for ``node_ids`` (those whose generation did not fail)."""
        for n in node_ids:
            if n in self._pushed:
                self._pushed[n] = configs
                self.check(n)

    def check(self, node_id: str) -> None:
        """Something about the node's sync state changed (an ACK): take its pushed config as ACKed once it is
        synced."""
        configs = self._pushed.get(node_id)
        if configs is None or self._acked.get(node_id) is configs or not self._status.is_synced(node_id):
            return
        self._acked[node_id] = configs
        self._changed()

    def _changed(self) -> None:
        self._groups = None
        if self.on_progress is not None:
            self.on_progress()

    def progress(self, config: Config) -> tuple[int, int]:
        """(proxies that ACKed ``config``'s content, connected proxies)."""
        if self._groups is None:   # proxies on the same snapshot are asked once
            counts: dict[int, tuple[ConfigSnapshot, int]] = {}
            for snap in self._acked.values():
                counts[id(snap)] = (snap, counts.get(id(snap), (snap, 0))[1] + 1)
            self._groups = list(counts.values())
        want = config.content_hash()
        acked = 0
        for snap, count in self._groups:
            have = snap.get(config.kind, config.namespace, config.name)
            if have is not None and (have is config or have.content_hash() == want):
                acked += count
        return acked, len(self._pushed)

    def connected_count(self) -> int:
        """Connected proxies (a distribution report's ``dataPlaneCount``)."""
        return len(self._pushed)

    def nodes(self) -> list[str]:
        return sorted(self._pushed)
