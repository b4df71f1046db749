"""Istio's environment-variable settings (``PILOT_*``), read the way istiod reads them: booleans, numbers and
durations (Go's ``5s``, ``500ms``; a bare number is seconds). An unset variable gives the default; an
unreadable or too small value gives the default too, with a one-line warning naming the variable."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from mizzen.config.durations import parse_duration

__all__ = ["env_bool", "env_duration", "env_float", "env_int"]

log = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")


def env_bool(name: str) -> bool:
    """``$name`` is true (``1``, ``true``, ``yes``, ``on``, any case); unset or anything else: false."""
    return os.environ.get(name, "").strip().lower() in _TRUE


def _number(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None


def _duration(raw: str) -> float | None:
    value = parse_duration(raw)
    return _number(raw) if value is None else value


def _env(name: str, default: float, minimum: float, parse: Callable[[str], float | None], what: str,
         unit: str) -> float:
    """``$name`` parsed, if at least ``minimum``; else (with a warning if set) ``default``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = parse(raw)
    if value is None or not value >= minimum:
        log.warning("$%s=%r is not %s of at least %g%s; using %g%s", name, raw, what, minimum, unit, default,
                    unit)
        return default
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    """``$name`` as a number of at least ``minimum``, else ``default``."""
    return _env(name, default, minimum, _number, "a number", "")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    """``$name`` as a whole number (a fraction is cut) of at least ``minimum``, else ``default``."""
    return int(env_float(name, float(default), minimum=float(minimum)))


def env_duration(name: str, default: float, *, minimum: float = 0.0) -> float:
    """``$name`` as a duration in seconds of at least ``minimum`` seconds, else ``default``."""
    return _env(name, default, minimum, _duration, "a duration", "s")
