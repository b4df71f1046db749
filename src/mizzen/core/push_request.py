"""PushRequest: what one debounced push must do, like Istio's ``model.PushRequest``.

A request is frozen. ``full`` means config changed and generators must run (for the proxies the changed
objects can affect); a request that is not full only carries ``services`` whose endpoints changed (Istio's
incremental EDS push). ``configs`` names the changed objects; a full request with no config keys means
"everything may have changed" (a manual push, a restart). ``workloads`` names the workload instances that
registered or went away: their own proxies get everything regenerated (inbound listeners and clusters follow
the workload). The debouncer folds requests together with :meth:`PushRequest.merge`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mizzen.config.model import ConfigKey

__all__ = ["ConfigKey", "PushRequest", "WorkloadKey"]


@dataclass(frozen=True, order=True)
class WorkloadKey:
    """A workload instance (registered by a runner or from a WorkloadEntry) whose registration changed."""

    namespace: str
    name: str
    address: str = ""


@dataclass(frozen=True)
class PushRequest:
    full: bool = True
    configs: frozenset[ConfigKey] = frozenset()
    services: frozenset[str] = frozenset()          # hostnames whose endpoints changed
    workloads: frozenset[WorkloadKey] = frozenset()
    reasons: frozenset[str] = frozenset()
    start: float = 0.0                              # monotonic time of the first change folded in

    @staticmethod
    def config_change(keys: Iterable[ConfigKey], reasons: Iterable[str] = (),
                      start: float = 0.0) -> PushRequest:
        return PushRequest(True, frozenset(keys), reasons=frozenset(reasons), start=start)

    @staticmethod
    def endpoint_change(services: Iterable[str], workloads: Iterable[WorkloadKey] = (),
                        reasons: Iterable[str] = (), start: float = 0.0) -> PushRequest:
        return PushRequest(False, frozenset(), frozenset(services), frozenset(workloads), frozenset(reasons),
                           start)

    @staticmethod
    def everything(reasons: Iterable[str] = ("manual",), start: float = 0.0) -> PushRequest:
        return PushRequest(True, reasons=frozenset(reasons), start=start)

    @property
    def all_configs(self) -> bool:
        """A full push that names no objects: every generator, every proxy."""
        return self.full and not self.configs

    def merge(self, other: PushRequest) -> PushRequest:
        """Both requests' work in one (Istio's PushRequest.Merge): full if either is; the keys are unioned,
        except that a full request naming no objects stays "everything"."""
        full = self.full or other.full
        if (self.full and not self.configs) or (other.full and not other.configs):
            configs: frozenset[ConfigKey] = frozenset()
        else:
            configs = self.configs | other.configs
        starts = [s for s in (self.start, other.start) if s]
        return PushRequest(full, configs, self.services | other.services, self.workloads | other.workloads,
                           self.reasons | other.reasons, min(starts) if starts else 0.0)

    def kinds(self) -> frozenset[str]:
        return frozenset(k.kind for k in self.configs)
