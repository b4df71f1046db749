"""Validation messages: every error or warning names file, line, Kind/name and the field path.

Rendered as ``reviews.yaml:14: VirtualService/reviews: spec.http[0].route[1].weight: must be 0..100``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"      # only analyzer messages (Istio's Info level, e.g. IST0118); validation never uses it


@dataclass(frozen=True)
class Issue:
    message: str
    path: str = ""            # field path, e.g. "spec.http[0].route[1].weight"
    kind: str = ""
    name: str = ""
    file: str = ""
    line: int = 0
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file else ""
        obj = f"{self.kind}/{self.name}: " if self.kind else ""
        path = f"{self.path}: " if self.path else ""
        prefix = {Severity.WARNING: "warning: ", Severity.INFO: "info: "}.get(self.severity, "")
        return f"{where}{obj}{path}{prefix}{self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "message": self.message, "path": self.path, "kind": self.kind, "name": self.name,
            "file": self.file, "line": self.line, "severity": self.severity.value, "text": str(self),
        }


class ConfigError(Exception):
    """Raised when input is rejected; carries every issue found (not just the first)."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))
