"""Validation of one configuration object: structural (Istio's CRD schemas, :mod:`mizzen.config.schema`), then
semantic (one module per kind, Istio's own rules), analyzer-style warnings (:mod:`.analysis`), then
"accepted but not yet honoured" warnings (:mod:`.unhonoured`). Entry point: :func:`validate`.

Every module of this package is imported here (:func:`import_modules`), so a kind's validator module
registers itself (``@register(kind)``) just by existing: adding a kind touches ``kinds.py`` and its module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from mizzen.config import kinds, schema
from mizzen.config.errors import Issue, Severity
from mizzen.config.model import Config
from mizzen.config.validation.analysis import analyze
from mizzen.config.validation.common import VALIDATORS, Finding, Report, check_labels
from mizzen.config.validation.unhonoured import unhonoured_findings

__all__ = ["VALIDATORS", "import_modules", "line_of", "validate"]


def import_modules(package: str, paths: Iterable[str]) -> list[str]:
    """Import every module of ``package`` (found in ``paths``, its ``__path__``), sorted by name: their
    ``@register`` decorators fill :data:`VALIDATORS`. Returns the modules' names."""
    names = sorted(m.name for m in pkgutil.iter_modules(list(paths)) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


def line_of(config: Config, path: str) -> int:
    """Line of ``path`` in the object's source, or of its nearest enclosing field that has one."""
    lines = config.lines
    probe = path
    while True:
        line = lines.get(probe)
        if line is not None:
            return line
        if not probe:
            break
        probe = schema.parent_path(probe)
    return config.source.line if config.source else 0


def _issue(config: Config, f: Finding) -> Issue:
    return Issue(message=f.message, path=f.path, kind=config.kind, name=config.name,
                 file=config.source.file if config.source else "", line=line_of(config, f.path),
                 severity=f.severity)


def validate(config: Config) -> list[Issue]:
    """Every error and warning for one object (schema first; semantic checks only once the structure is "
      "right)."""
    kind = kinds.BY_NAME.get(config.kind)
    if kind is None:
        return []  # passive kinds (ServiceAccount, ...) carry nothing to check
    report = Report(config)
    if kind.istio:
        version = config.api_version.rpartition("/")[2]
        report.findings.extend(schema.validate_spec(config.kind, version, dict(config.spec)))
    check_labels(report, "metadata.labels", dict(config.labels))
    if not report.has_errors:
        validator = VALIDATORS.get(config.kind)
        if validator is not None:
            validator(config, report)
        if not report.has_errors:
            analyze(config, report)
    report.findings.extend(unhonoured_findings(config))
    issues = [_issue(config, f) for f in report.findings]
    issues.sort(key=lambda i: (i.severity is Severity.WARNING, i.line))
    return issues


import_modules(__name__, __path__)   # last: a module may use what this one defines
