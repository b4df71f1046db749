"""Telemetry (issue 12): Istio's standard metrics from every proxy (:mod:`.metrics`, :mod:`.exchange`), access
logs (:mod:`.access_log`), the Telemetry API (:mod:`.api`), the listener plugin that puts them into listeners
(:mod:`.plugin`) and the Prometheus text the agent serves (:mod:`.prometheus`; TCP source labels from the
peer's address and identity: :mod:`.peer_address`).
"""

from __future__ import annotations

from mizzen import tracing
from mizzen.core import plugins
from mizzen.telemetry.plugin import TelemetryPlugin, telemetry_sampling

__all__ = ["TelemetryPlugin", "acquire", "register", "release"]

_users = 0


def register() -> None:
    """Register the telemetry listener plugin (idempotent) and the Telemetry API's trace sampling as a
    sampling source of the tracer (:mod:`mizzen.tracing`); without a tracer the plugin's own ``tracing`` sets
    the HCM's random sampling."""
    plugins.register(TelemetryPlugin())
    tracing.register_sampling_source(telemetry_sampling)


def acquire() -> None:
    """A control plane starts: the plugin is registered while at least one runs in this process (so pure
    listener tests in the same process see core's output alone)."""
    global _users
    _users += 1
    register()


def release() -> None:
    global _users
    _users = max(0, _users - 1)
    if _users == 0:
        plugins.unregister(TelemetryPlugin.name)
