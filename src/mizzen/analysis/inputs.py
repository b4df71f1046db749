"""Input for ``mizzen analyze`` from files: everything that can be analyzed is, like ``istioctl analyze``.

A document of a kind Mizzen does not model (Pod, Node, Ingress, EnvoyFilter, Gateway API, ...) is skipped
with a note; an object of a modelled kind that fails validation becomes IST0106 SchemaValidationError
messages (one per error) and stays out of the analyzed set; text that is not YAML, or a document that is not
an object with a kind, is a parse error (istioctl's "files couldn't be parsed"). The rest loads as it would
for ``mizzen apply``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mizzen.analysis.message import AnalysisIssue
from mizzen.analysis.schema import schema_error
from mizzen.config import kinds
from mizzen.config.errors import Issue, Severity
from mizzen.config.loader import build_object, parse_documents
from mizzen.config.model import DEFAULT_NAMESPACE, Config
from mizzen.config.validation import validate

__all__ = ["AnalysisInput", "read_documents"]


@dataclass
class AnalysisInput:
    configs: list[Config] = field(default_factory=list)          # valid objects, in input order
    messages: list[AnalysisIssue] = field(default_factory=list)  # IST0106 for objects that failed validation
    skipped: list[str] = field(default_factory=list)             # notes: documents Mizzen does not model
    parse_errors: list[Issue] = field(default_factory=list)      # input that is no YAML object


def _modelled(kind: str, api_version: str) -> bool:
    known = kinds.BY_NAME.get(kind)
    if known is not None:
        return api_version in known.api_versions
    return kind in kinds.PASSIVE_KINDS


def read_documents(texts: Sequence[tuple[str, str]], namespace: str | None = None) -> AnalysisInput:
    """``(file, text)`` pairs -> what to analyze, what failed validation, what was skipped and why."""
    out = AnalysisInput()
    seen: set[tuple[str, str, str]] = set()
    for file, text in texts:
        docs, problems = parse_documents(text, file)
        out.parse_errors.extend(problems)
        for doc in docs:
            kind, api = doc.data.get("kind"), doc.data.get("apiVersion")
            meta = doc.data.get("metadata")
            name = str(meta.get("name") or "") if isinstance(meta, dict) else ""
            if not isinstance(kind, str) or not kind or not isinstance(api, str) or not api:
                out.parse_errors.append(Issue("document has no kind or apiVersion: not a Kubernetes object",
                                              file=file, line=doc.line))
                continue
            if not _modelled(kind, api):
                out.skipped.append(f"{file}:{doc.line}: {kind} {name or '(unnamed)'} ({api}) skipped: "
                                   "Mizzen does not model this kind")
                continue
            ns = str(meta.get("namespace") or namespace or DEFAULT_NAMESPACE) \
                if isinstance(meta, dict) else namespace or DEFAULT_NAMESPACE
            cfg, errors = build_object(doc, namespace)
            if cfg is not None:
                issues = validate(cfg)
                errors = [i for i in issues if i.severity is Severity.ERROR]
                ident = (cfg.kind, cfg.namespace, cfg.name)
                if not errors and ident in seen:
                    errors = [Issue(f"duplicate object {cfg.kind} {cfg.namespace}/{cfg.name}: the first one "
                                    "is analyzed", kind=cfg.kind, name=cfg.name, file=file, line=doc.line)]
            if errors:
                known = kinds.BY_NAME.get(kind)
                if known is not None and not known.namespaced:
                    ns = ""
                out.messages.extend(schema_error(e, cfg.namespace if cfg is not None else ns) for e in errors)
                continue
            assert cfg is not None
            seen.add((cfg.kind, cfg.namespace, cfg.name))
            out.configs.append(cfg)
    return out
