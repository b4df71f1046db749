"""Loading configuration files (Galley's job): multi-document YAML or JSON keeping every field's 1-based line.

:func:`parse_documents` makes :class:`Document` s (syntax errors become Issues); :func:`load_text` and
:func:`load_paths` check apiVersion/kind, metadata and namespaces, validate each object and report duplicates.
"""

from __future__ import annotations

import base64
import datetime as _dt
import difflib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mizzen.config import kinds, schema
from mizzen.config.errors import Issue, Severity
from mizzen.config.model import DEFAULT_NAMESPACE, Config, Source
from mizzen.config.validation import validate
from mizzen.config.validation.common import is_k8s_dns_label, is_k8s_dns_subdomain

log = logging.getLogger(__name__)

_FastLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BLANK = "\0 \t\r\n\x85\u2028\u2029"


class KubeYAMLLoader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """PyYAML's safe loader with go-yaml's plain-scalar rule (what kubectl uses): in a flow collection
    ``:`` ends a plain scalar only before a blank, so ``addresses: [2001:db8::]`` is one string."""

    def scan_plain(self) -> Any:  # adapted from yaml.scanner.Scanner.scan_plain (MIT licence)
        chunks: list[str] = []
        start_mark = self.get_mark()
        end_mark = start_mark
        indent = self.indent + 1
        spaces: list[str] = []
        while True:
            length = 0
            if self.peek() == "#":
                break
            while True:
                ch = self.peek(length)
                if ch in _BLANK or (ch == ":" and self.peek(length + 1) in _BLANK) \
                        or (self.flow_level and ch in ",?[]{}"):
                    break
                length += 1
            if length == 0:
                break
            self.allow_simple_key = False
            chunks.extend(spaces)
            chunks.append(self.prefix(length))
            self.forward(length)
            end_mark = self.get_mark()
            spaces = self.scan_plain_spaces(indent, start_mark) or []
            if not spaces or self.peek() == "#" or (not self.flow_level and self.column < indent):
                break
        return yaml.tokens.ScalarToken("".join(chunks), True, start_mark, end_mark)


# a ':' right before a flow indicator is where libyaml and go-yaml disagree; only then use the slower loader
_COLON_IN_FLOW = re.compile(r":[,\[\]{}]")

FILE_SUFFIXES = (".yaml", ".yml", ".json")

# Istio kinds users may well write that Mizzen does not implement yet: kind -> API group.
UNSUPPORTED_ISTIO_KINDS: dict[str, str] = {
    "AuthorizationPolicy": "security.istio.io",
    "PeerAuthentication": "security.istio.io",
    "RequestAuthentication": "security.istio.io",
    "Telemetry": "telemetry.istio.io",
    "EnvoyFilter": "networking.istio.io",
    "WorkloadGroup": "networking.istio.io",
    "ProxyConfig": "networking.istio.io",
    "WasmPlugin": "extensions.istio.io",
    "TrafficExtension": "extensions.istio.io",
}
# API groups whose kinds are not supported yet (the Kubernetes Gateway API's Gateway shares a kind name)
UNSUPPORTED_GROUPS = frozenset({
    "gateway.networking.k8s.io", "security.istio.io", "telemetry.istio.io", "extensions.istio.io",
})
_TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
_ALLOWED_METADATA = frozenset({
    "name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation", "creationTimestamp",
    "managedFields", "ownerReferences", "finalizers", "generateName", "selfLink", "deletionTimestamp",
    "deletionGracePeriodSeconds",
})


@dataclass
class Document:
    """One parsed YAML/JSON document: its data, file, first line, and field path -> 1-based line."""

    data: dict[str, Any]
    file: str
    line: int
    lines: dict[str, int] = field(default_factory=dict)


@dataclass
class LoadResult:
    configs: list[Config] = field(default_factory=list)
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def extend(self, other: LoadResult) -> None:
        self.configs.extend(other.configs)
        self.errors.extend(other.errors)
        self.warnings.extend(other.warnings)


# ---------------------------------------------------------------------------------------------- parsing


MAX_VALUES_PER_DOCUMENT = 500_000
# Nesting deeper than this is refused with an Issue (Istio's objects nest about 10 levels; recursion in the
# parser, the schema walk and the validators must never hit Python's limit).
MAX_DEPTH = 100


class _StructureError(Exception):
    """A document YAML can express but Kubernetes cannot take (recursive or exploding aliases)."""


def _plain(value: Any, budget: list[int]) -> Any:
    """What Kubernetes' YAML->JSON step makes of a value: string keys, timestamps and binary as strings."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _StructureError(f"document too large (over {MAX_VALUES_PER_DOCUMENT} values after alias "
                              "expansion)")
    if isinstance(value, dict):
        return {str(k): _plain(v, budget) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, budget) for v in value]
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _collect_lines(node: yaml.Node, path: str, lines: dict[str, int], dups: list[tuple[str, int]],
                   active: set[int], walked: set[int], depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        where = path if len(path) <= 60 else path[:60] + "..."
        raise _StructureError(f"document nested too deeply (more than {MAX_DEPTH} levels) at {where}")
    if id(node) in active:
        raise _StructureError("recursive YAML alias")
    if id(node) in walked:
        return  # an alias of a node already walked: its lines are those of the anchor
    walked.add(id(node))
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            child = schema.key_path(path, key)
            if key in seen:
                dups.append((child, key_node.start_mark.line + 1))
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _collect_lines(value_node, child, lines, dups, active, walked, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = schema.index_path(path, i)
            lines[child] = item.start_mark.line + 1
            _collect_lines(item, child, lines, dups, active, walked, depth + 1)
    active.discard(id(node))


def _sub_lines(lines: dict[str, int], prefix: str) -> dict[str, int]:
    """Re-root ``items[3].spec.x`` -> ``spec.x`` for the items of a ``kind: List``."""
    out: dict[str, int] = {}
    for p, ln in lines.items():
        if p.startswith(prefix + "."):
            out[p[len(prefix) + 1:]] = ln
        elif p.startswith(prefix + '["'):
            out[p[len(prefix):]] = ln
    return out


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, max(position, 0)) + 1


def _yaml_error(exc: yaml.YAMLError, file: str, text: str) -> Issue:
    if isinstance(exc, yaml.reader.ReaderError):   # a character YAML does not allow (control characters)
        char = exc.character
        shown = f"#x{char:04x}" if isinstance(char, int) else repr(char)
        return Issue(f"YAML syntax error: {exc.reason} {shown} at position {exc.position}", file=file,
                     line=_line_at(text, exc.position))
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or "invalid YAML"
        if exc.context:
            reason = f"{reason} ({exc.context}"
            if exc.context_mark is not None and exc.problem_mark is not None \
                    and exc.context_mark.line != exc.problem_mark.line:
                reason += f" at line {exc.context_mark.line + 1}"
            reason += ")"
        return Issue(f"YAML syntax error: {reason}", file=file, line=(mark.line + 1) if mark else 0)
    return Issue(f"YAML syntax error: {exc}", file=file)


def parse_documents(text: str, file: str) -> tuple[list[Document], list[Issue]]:
    """Parse every document of a YAML (or JSON) stream, keeping the line of each field.

    Empty documents are skipped, ``kind: List`` is expanded into its items, and a syntax error stops parsing
    with an Issue at its line (documents before it are still returned).
    """
    docs: list[Document] = []
    issues: list[Issue] = []
    bad = text_error(text)
    if bad is not None:
        return docs, [Issue(bad[1], file=file, line=bad[0])]
    try:
        loader = (KubeYAMLLoader if _COLON_IN_FLOW.search(text) else _FastLoader)(text)
    except yaml.YAMLError as exc:    # the pure-Python reader checks the characters up front
        return docs, [_yaml_error(exc, file, text)]
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            line = node.start_mark.line + 1
            lines: dict[str, int] = {"": line}
            dups: list[tuple[str, int]] = []
            try:
                _collect_lines(node, "", lines, dups, set(), set())
                data = _plain(loader.construct_document(node), [MAX_VALUES_PER_DOCUMENT])
            except _StructureError as exc:
                issues.append(Issue(str(exc), file=file, line=line))
                continue
            except (ValueError, OverflowError) as exc:
                # a scalar PyYAML cannot convert: a 5000-digit int, a date like 2001-02-30
                issues.append(Issue(f"invalid value: {exc}".split("; use sys.")[0], file=file, line=line))
                continue
            if data is None:
                continue
            if not isinstance(data, dict):
                issues.append(Issue(f"document must be a mapping (an object), got {type(data).__name__}",
                                    file=file, line=line))
                continue
            for path, ln in dups:
                issues.append(Issue(f'duplicate key "{path.rpartition(".")[2]}" in mapping', path=path,
                                    file=file, line=ln))
            if str(data.get("kind", "")).endswith("List") and isinstance(data.get("items"), list):
                for i, item in enumerate(data["items"]):
                    prefix = f"items[{i}]"
                    if not isinstance(item, dict):
                        issues.append(Issue("list item must be a mapping", path=prefix, file=file,
                                            line=lines.get(prefix, line)))
                        continue
                    sub = _sub_lines(lines, prefix)
                    sub[""] = lines.get(prefix, line)
                    docs.append(Document(item, file, sub[""], sub))
                continue
            docs.append(Document(data, file, line, lines))
    except yaml.YAMLError as exc:
        issues.append(_yaml_error(exc, file, text))
    except RecursionError:   # nesting too deep for the parser itself (before _collect_lines could count it)
        issues.append(Issue(f"document nested too deeply (more than {MAX_DEPTH} levels)", file=file,
                            line=_line_at(text, len(text))))
    finally:
        loader.dispose()
    return docs, issues


def text_error(text: str) -> tuple[int, str] | None:
    """(line, reason) when ``text`` cannot be a UTF-8 document: a lone surrogate (what invalid UTF-8 or a
    ``\\udc80`` escape in JSON decodes to) cannot be stored, sent to Envoy or printed."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        return _line_at(text, e.start), f"text is not valid UTF-8: lone surrogate U+{code:04X} at " \
                                        f"position {e.start}"
    return None


# ---------------------------------------------------------------------------------------------- objects


def _supported_kinds() -> str:
    return ", ".join(f"{k.kind} ({k.preferred_api_version})" for k in kinds.ALL_KINDS)


def _string_map(meta: dict[str, Any], key: str, err: Any) -> dict[str, str]:
    raw = meta.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        err(f"metadata.{key}", f"must be a map of strings, got {type(raw).__name__}")
        return {}
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(v, str):
            err(schema.key_path(f"metadata.{key}", k), f"value must be a string (quote it: \"{v}\")")
            continue
        out[k] = v
    return out


@dataclass
class _ObjectBuilder:
    doc: Document
    namespace: str | None
    errors: list[Issue] = field(default_factory=list)
    kind: str = ""
    name: str = ""

    def err(self, path: str, message: str, *, show_path: bool = True) -> None:
        line = self.doc.lines.get(path)
        probe = path
        while line is None and probe:
            probe = schema.parent_path(probe)
            line = self.doc.lines.get(probe)
        self.errors.append(Issue(message, path=path if show_path else "", kind=self.kind, name=self.name,
                                 file=self.doc.file, line=line or self.doc.line))

    def build(self) -> Config | None:
        data = self.doc.data
        api_version, kind_name = data.get("apiVersion"), data.get("kind")
        if not isinstance(kind_name, str) or not kind_name:
            self.err("kind", "kind is required")
            return None
        self.kind = kind_name
        meta = data.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("name"), str):
            self.name = meta["name"]
        if not isinstance(api_version, str) or not api_version:
            self.err("apiVersion", "apiVersion is required")
            return None
        known = kinds.BY_NAME.get(kind_name)
        passive = known is None and kind_name in kinds.PASSIVE_KINDS
        api_group = api_version.rpartition("/")[0]
        if api_group in UNSUPPORTED_GROUPS and (known is None or api_group != known.group):
            self.err("kind", f"kind {kind_name} ({api_group}) is not supported yet; supported kinds: "
                             f"{_supported_kinds()}", show_path=False)
            return None
        if known is None and not passive:
            group = UNSUPPORTED_ISTIO_KINDS.get(kind_name)
            if group is not None:
                self.err("kind", f"kind {kind_name} ({group}) is not supported yet; supported kinds: "
                                 f"{_supported_kinds()}", show_path=False)
            else:
                close = difflib.get_close_matches(kind_name, [*kinds.BY_NAME, *kinds.PASSIVE_KINDS], n=1)
                hint = f'did you mean "{close[0]}"? ' if close else ""
                self.err("kind", f'unknown kind "{kind_name}" (apiVersion "{api_version}"); {hint}supported '
                                 f"kinds: {_supported_kinds()}", show_path=False)
            return None
        if known is not None and api_version not in known.api_versions:
            self.err("apiVersion", f'apiVersion "{api_version}" is not supported for kind {kind_name}; '
                                   f"use one of: {', '.join(known.api_versions)}", show_path=False)
            return None
        if not isinstance(meta, dict):
            self.err("metadata", "metadata is required (with at least a name)")
            return None
        for key in meta:
            if key not in _ALLOWED_METADATA:
                self.err(schema.key_path("metadata", str(key)), f'unknown field "{key}"')
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            self.err("metadata.name", "metadata.name is required")
            return None
        if not is_k8s_dns_subdomain(name):
            self.err("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must '
                                      'consist of '
                                      "lower case alphanumeric characters, '-' or '.', and must start and "
                                      "end "
                                      "with an alphanumeric character")
        namespace = self._namespace(meta, known)
        labels = _string_map(meta, "labels", self.err)
        annotations = _string_map(meta, "annotations", self.err)
        if passive:
            spec = {k: v for k, v in data.items() if k not in ("apiVersion", "kind", "metadata")}
        elif known is not None and known.body:
            spec = self._body(data, known.body)
        else:
            spec = self._spec(data, kind_name, api_version)
        if self.errors:
            return None
        return Config(kind=kind_name, api_version=api_version, name=name, namespace=namespace, spec=spec,
                      labels=labels, annotations=annotations, source=Source(self.doc.file, self.doc.line),
                      lines=self.doc.lines)

    def _namespace(self, meta: dict[str, Any], known: kinds.Kind | None) -> str:
        if known is not None and not known.namespaced:
            return ""
        ns_meta = meta.get("namespace")
        if ns_meta is not None and (not isinstance(ns_meta, str) or not is_k8s_dns_label(ns_meta)):
            self.err("metadata.namespace", f'Invalid value: "{ns_meta}": a lowercase RFC 1123 label must '
                                           'consist '
                                           "of lower case alphanumeric characters or '-'")
            return DEFAULT_NAMESPACE
        if ns_meta and self.namespace and ns_meta != self.namespace:
            self.err("metadata.namespace",
                     f'the namespace from the provided object "{ns_meta}" does not match the namespace '
                     f'"{self.namespace}". You must pass \'--namespace={ns_meta}\' to perform this '
                     "operation.")
        return str(ns_meta or self.namespace or DEFAULT_NAMESPACE)

    def _body(self, data: dict[str, Any], body: tuple[str, ...]) -> dict[str, Any]:
        """A kind without ``spec`` (Secret): its content fields, kept as the stored spec."""
        for key in data:
            if key not in body and key not in _TOP_LEVEL - {"spec"}:
                self.err(schema.key_path("", str(key)), f'unknown field "{key}"')
        return {k: data[k] for k in body if k in data}

    def _spec(self, data: dict[str, Any], kind_name: str, api_version: str) -> dict[str, Any]:
        for key in data:
            if key not in _TOP_LEVEL:
                self.err(schema.key_path("", str(key)), f'unknown field "{key}"')
        spec = data.get("spec")
        version = api_version.rpartition("/")[2]
        if "spec" not in data:
            if schema.spec_required(kind_name, version):
                self.err("spec", "Required value")
            return {}
        if spec is None:
            return {}
        if not isinstance(spec, dict):
            self.err("spec", f"spec must be an object, got {type(spec).__name__}")
            return {}
        return spec


def build_object(doc: Document, namespace: str | None = None) -> tuple[Config | None, list[Issue]]:
    """One parsed document -> its Config (kind, apiVersion, metadata and spec shape checked, not yet
    validated), or None with the reasons (an unknown kind, bad metadata, ...)."""
    builder = _ObjectBuilder(doc, namespace)
    cfg = builder.build()
    return cfg, list(builder.errors)


def _load_documents(docs: list[Document], namespace: str | None, result: LoadResult,
                    seen: dict[tuple[str, str, str], Source]) -> None:
    for doc in docs:
        builder = _ObjectBuilder(doc, namespace)
        cfg = builder.build()
        result.errors.extend(builder.errors)
        if cfg is None:
            continue
        try:
            issues = validate(cfg)
        except Exception as exc:   # a validator bug must be a clear error, never a traceback or a pass
            log.exception("validator failed on %s", cfg.key)
            issues = [Issue(f"internal validation error: {type(exc).__name__}: {exc}", kind=cfg.kind,
                            name=cfg.name, file=doc.file, line=doc.line)]
        errs = [i for i in issues if i.severity is Severity.ERROR]
        result.errors.extend(errs)
        result.warnings.extend(i for i in issues if i.severity is Severity.WARNING)
        ident = (cfg.kind, cfg.namespace, cfg.name)
        first = seen.get(ident)
        if first is not None:
            where = f"{cfg.namespace}/{cfg.name}" if cfg.namespace else cfg.name
            result.errors.append(Issue(f"duplicate object {cfg.kind} {where} (first defined at {first})",
                                       kind=cfg.kind, name=cfg.name, file=doc.file, line=doc.line))
            continue
        seen[ident] = Source(doc.file, doc.line)
        if not errs:
            result.configs.append(cfg)


def namespace_error(namespace: str) -> str | None:
    """Why ``namespace`` (from ``-n``, an API path, query or body) is not a Kubernetes namespace name."""
    if not is_k8s_dns_label(namespace):
        return (f"invalid namespace {namespace!r}: a lowercase RFC 1123 label must consist of lower case "
                "alphanumeric characters or '-', start and end with an alphanumeric character, and be at "
                "most 63 characters")
    return None


def load_text(text: str, file: str = "<input>", namespace: str | None = None) -> LoadResult:
    """Parse and validate one YAML/JSON text. ``namespace`` applies where ``metadata.namespace`` is unset."""
    result = LoadResult()
    if namespace is not None and (bad := namespace_error(namespace)) is not None:
        result.errors.append(Issue(bad, file=file))
        return result
    docs, issues = parse_documents(text, file)
    result.errors.extend(issues)
    _load_documents(docs, namespace, result, {})
    return result


def load_object(data: dict[str, Any], file: str) -> LoadResult:
    """Build and validate one object already decoded (e.g. from the Kubernetes API), as :func:`load_text`
    does for text; ``file`` names where it came from in messages."""
    result = LoadResult()
    _load_documents([Document(data, file, 1)], None, result, {})
    return result


class TooManyObjects(ValueError):
    """More objects than a caller's limit (the API's per-request limit)."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"too many objects in one request: {count} (at most {limit}; split them into "
                         "several applies)")
        self.count = count
        self.limit = limit

    def __reduce__(self) -> tuple[type[TooManyObjects], tuple[int, int]]:   # it crosses process boundaries
        return TooManyObjects, (self.count, self.limit)


def load_texts(texts: Sequence[tuple[str, str]], namespace: str | None = None,
               max_objects: int | None = None) -> LoadResult:
    """:func:`load_text` over several ``(text, file)`` pairs; with ``max_objects``, raise
    :class:`TooManyObjects` once parsing finds more, before anything is validated."""
    result = LoadResult()
    if namespace is not None and (bad := namespace_error(namespace)) is not None:
        result.errors.append(Issue(bad, file=texts[0][1] if texts else ""))
        return result
    parsed: list[list[Document]] = []
    count = 0
    for text, file in texts:
        docs, issues = parse_documents(text, file)
        count += len(docs)
        if max_objects is not None and count > max_objects:
            raise TooManyObjects(count, max_objects)
        result.errors.extend(issues)
        parsed.append(docs)
    for docs in parsed:
        _load_documents(docs, namespace, result, {})
    return result


def expand_paths(paths: Sequence[str | Path]) -> tuple[list[Path], list[Issue]]:
    """Files as given, directories as their *.yaml/*.yml/*.json files (recursively, sorted)."""
    files: list[Path] = []
    issues: list[Issue] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in FILE_SUFFIXES))
        elif p.is_file():
            files.append(p)
        else:
            issues.append(Issue(f"no such file or directory: {raw}"))
    return files, issues


def load_paths(paths: Sequence[str | Path], namespace: str | None = None) -> LoadResult:
    """Load files and directories as one unit: duplicates across files are errors too."""
    result = LoadResult()
    if namespace is not None and (bad := namespace_error(namespace)) is not None:
        result.errors.append(Issue(bad))
        return result
    files, issues = expand_paths(paths)
    result.errors.extend(issues)
    seen: dict[tuple[str, str, str], Source] = {}
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            result.errors.append(Issue(f"cannot read file {f}: {exc}"))
            continue
        docs, parse_issues = parse_documents(text, str(f))
        result.errors.extend(parse_issues)
        _load_documents(docs, namespace, result, seen)
    return result
