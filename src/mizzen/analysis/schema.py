"""Per-object findings as analyzer messages (Istio's schema.ValidationAnalyzer): a validation error is
IST0106 SchemaValidationError; a validation warning that carries an Istio code (``[IST0118] ...``, written
by :mod:`mizzen.config.validation.analysis` and the VirtualService rule checks) is that message, at Istio's
level.
Validation computes each finding once; ``mizzen validate``/``apply`` show it as a warning, ``mizzen analyze``
as the analyzer message.
"""

from __future__ import annotations

from mizzen.analysis.context import AnalysisContext
from mizzen.analysis.message import CODES, AnalysisIssue, code_of, issue_at
from mizzen.config.errors import Issue, Severity
from mizzen.config.model import Config

__all__ = ["coded_findings", "schema_error", "validation_findings"]


def schema_error(issue: Issue, namespace: str) -> AnalysisIssue:
    """IST0106 for one validation error of an object that did not load."""
    where = f"{issue.path}: " if issue.path else ""
    return issue_at("IST0106", issue.kind, namespace, issue.name, issue.path,
                    f"Schema validation error: {where}{issue.message}", issue.file, issue.line)


def coded_findings(cfg: Config, issues: list[Issue]) -> list[AnalysisIssue]:
    """The coded warnings among ``issues`` (from validating ``cfg``) as analyzer messages."""
    out: list[AnalysisIssue] = []
    for i in issues:
        if i.severity is Severity.ERROR:
            continue
        code, text = code_of(i.message)
        if code in CODES:
            out.append(issue_at(code, cfg.kind, cfg.namespace, cfg.name, i.path, text, i.file, i.line))
    return out


def validation_findings(ctx: AnalysisContext) -> list[AnalysisIssue]:
    """Every stored object validated again: its coded warnings (its errors cannot occur: a stored object is
    valid; input that is not is IST0106 before it gets here, see :mod:`.inputs`)."""
    from mizzen.config.validation import validate

    out: list[AnalysisIssue] = []
    for cfg in ctx.configs:
        out.extend(coded_findings(cfg, validate(cfg)))
    return out
