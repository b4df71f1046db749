"""A seeded fuzzer of Istio config: mutated documents from Istio's own samples (``tests/fixtures/istio``, the
seed listings and Bookinfo's manifest) through ``validate`` (the loader), ``apply`` (the store) and the raw
HTTP API, against a control plane with real Envoys connected (one sidecar, one gateway).

Used by ``tests/controlplane/test_cp_fuzz.py`` (a few thousand documents) and ``bench/fuzz.py`` (bigger runs).
What it checks (issue 8): no traceback anywhere, no HTTP 500, the API agrees with ``validate`` (422 exactly
when validation fails), no NACK of anything accepted except the node-only classes (a port in use, an address
not on the machine, a missing certificate file: each must come with a readable reason), and the control
plane's RSS at the end at most 1.5x its RSS at the start.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import Mesh
from mizzen.bookinfo import MANIFEST
from mizzen.config.loader import load_text
from mizzen.xds.status import NACKED

__all__ = ["FuzzReport", "Mutator", "load_samples", "run_fuzz"]

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIRS = (ROOT / "tests" / "fixtures" / "istio", ROOT / "tests" / "fixtures" / "seed")

# what only the node can know (issue 8, item 3): a listener that cannot bind or a TLS file that is missing
NODE_ONLY = re.compile(
    r"cannot bind '[^']*': (Address already in use|Cannot assign requested address|Permission denied)"
    r"|Failed to load (incomplete )?(certificate chain|private key|trusted CA certificates|certificate)"
    r"[^;]* from (path: )?\S"          # a relative path too: it names a file on the node
    r"|Invalid path: "
    r"|(certificate|private key|ca) file.*(does not exist|cannot be read|No such file)", re.I)


def node_only(reason: str) -> bool:
    """Every part of the reason (Envoy's per-listener lines, joined by ';') is a node-only rejection."""
    parts = [p.strip() for p in reason.split(";") if p.strip()]
    return bool(parts) and all(NODE_ONLY.search(p) for p in parts)


def load_samples() -> list[dict[str, Any]]:
    """Every mapping document with a kind in the sample files (deterministic order)."""
    docs: list[dict[str, Any]] = []
    files = [*sorted(p for d in SAMPLE_DIRS for p in d.rglob("*.yaml")), MANIFEST]
    for f in files:
        try:
            for d in yaml.safe_load_all(f.read_text()):
                if isinstance(d, dict) and isinstance(d.get("kind"), str):
                    docs.append(d)
        except yaml.YAMLError:
            continue
    return docs


# --- mutations --------------------------------------------------------------------------------------------

def _long_name(rng: random.Random) -> str:
    n = rng.choice([63, 64, 200, 237, 250, 253, 254, 300])
    labels, left = [], n
    while left > 0:
        k = min(63, left)
        labels.append("a" * k)
        left -= k + 1
    return ".".join(labels)[:n].strip(".")


def _deep(rng: random.Random) -> Any:
    value: Any = "x"
    for _ in range(rng.choice([20, 90, 101, 150, 600])):
        value = {"a": value} if rng.random() < 0.5 else [value]
    return value


def _plausible_value(rng: random.Random, old: Any) -> Any:
    """A value of the same type that could well be valid: what gets past validation and reaches Envoy."""
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return rng.choice([0, 1, 2, 50, 80, 100, 443, 8080, 9080, 65535, 65536, -1, 2**32, old + 1, old * 10])
    if isinstance(old, float):
        return rng.choice([0.0, 0.5, 100.0, 101.0, -1.0])
    if isinstance(old, str):
        return rng.choice([
            "reviews", "v1", "v9", "*", "*.example.com", "example.com", "1s", "0s", "10ms", "0.001s", "/api",
            "GET", "x-user", "http", "HTTP", "HTTP2", "GRPC", "TCP", "TLS", "HTTPS", "MONGO", "127.0.0.1",
            "10.0.0.0/8", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL", "PASSTHROUGH", "AUTO_PASSTHROUGH",
            "ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "MESH_EXTERNAL", "DNS", "STATIC", "NONE", "mesh",
            "bookinfo-gateway",
            "reviews.bookinfo.svc.cluster.local", "^/api/v[0-9]+$", "a{200}", "%REQ(x-user)%", "100%%",
            "5xx,gateway-error", "TLSV1_3", "x" * 300, old + old, old.upper(), old[: len(old) // 2]])
    if isinstance(old, list):
        return old * 2 if old else [rng.choice(["reviews", 1, {"a": "b"}])]
    if isinstance(old, dict):
        return {**old, **{k: _plausible_value(rng, v) for k, v in list(old.items())[:1]}}
    return _strange_value(rng)


def _strange_value(rng: random.Random) -> Any:
    pool: list[Callable[[], Any]] = [
        lambda: {}, lambda: [], lambda: {"a": 1}, lambda: [1, "x"], lambda: None, lambda: True, lambda: False,
        lambda: 0, lambda: -1, lambda: 65536, lambda: 2**31, lambda: 2**63, lambda: 10**30, lambda: 1.5,
        lambda: 1e308, lambda: "", lambda: " ", lambda: "\n", lambda: "a\nb", lambda: "..", lambda: "a/b",
        lambda: "%REQ%", lambda: "%", lambda: "100%", lambda: "é" * 20, lambda: "\udc80",
        lambda: "x" * rng.choice([64, 254, 4097, 16385, 70000]), lambda: "*", lambda: "*.*", lambda: "-1s",
        lambda: "1000000000000h", lambda: "0.0.0.0/0", lambda: "999.999.1.1", lambda: "[a-", lambda: "\x00",
        lambda: "\t", lambda: "Host", lambda: ":path", lambda: "x-" + "a" * 16400,
        lambda: _long_name(rng), lambda: _deep(rng), lambda: list(range(rng.choice([100, 600]))),
        lambda: {str(i): "v" for i in range(rng.choice([10, 300]))}, lambda: "2001-02-30",
        lambda: "a" * 20 + "\u2028", lambda: "${VAR}", lambda: "\\", lambda: "'\"",
    ]
    return rng.choice(pool)()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        node = node[p]
    return node


class Mutator:
    """Seeded mutations of sample documents, structural (values, keys, names) and textual (bytes, lines)."""

    def __init__(self, samples: list[dict[str, Any]], seed: int) -> None:
        self.samples = samples
        self.rng = random.Random(seed)

    def document(self) -> tuple[str, str | None]:
        """(YAML text, namespace to pass or None)."""
        rng = self.rng
        doc = copy.deepcopy(rng.choice(self.samples))
        for _ in range(rng.choice([0, 0, 1, 1, 1, 2, 3])):
            self._mutate(doc)
        text = self._dump(doc)
        if rng.random() < 0.15:
            text = self._mutate_text(text)
        if rng.random() < 0.1:       # several documents in one text, like a file of many objects
            text += "\n---\n" + self._dump(copy.deepcopy(rng.choice(self.samples)))
        namespace = rng.choice([None] * 6 + ["bookinfo", "default", "fuzz", "x" * 63] * 2
                               + ["a\nb", "..", "Bad", "x" * 64])
        return text, namespace

    def _dump(self, doc: Any) -> str:
        try:
            return yaml.safe_dump(doc, sort_keys=False, allow_unicode=self.rng.random() < 0.5, width=10**6)
        except (yaml.YAMLError, RecursionError):
            return json.dumps(doc, default=str)

    def _mutate(self, doc: dict[str, Any]) -> None:
        rng = self.rng
        paths = _paths(doc)
        path = rng.choice(paths)
        op = rng.random()
        if not path:
            return
        parent, key = _get(doc, path[:-1]), path[-1]
        if op < 0.25:
            parent[key] = _strange_value(rng)
        elif op < 0.45:
            parent[key] = _plausible_value(rng, parent[key])
        elif op < 0.6 and isinstance(parent, dict):
            del parent[key]
        elif op < 0.7 and isinstance(parent, dict):
            parent[rng.choice(["unknownField", "x", "spec", "metadata", "status", str(rng.random())])] = \
                _strange_value(rng)
        elif op < 0.78 and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        elif op < 0.88:
            meta = doc.setdefault("metadata", {})
            if isinstance(meta, dict):
                meta[rng.choice(["name", "namespace"])] = rng.choice(
                    [_long_name(rng), "a/b", "..", "x\ny", "UPPER", "ok-name", "x" * 64, "é"])
        else:
            other = rng.choice(self.samples)
            doc["kind"], doc["apiVersion"] = other.get("kind"), other.get("apiVersion")

    def _mutate_text(self, text: str) -> str:
        rng = self.rng
        i = rng.randrange(len(text) + 1)
        op = rng.random()
        if op < 0.3:
            return text[:i]                                          # truncated
        if op < 0.5:
            return text[:i] + rng.choice(["\x00", "\x07", "\t", "\ufeff", "\udc80", "\x85", ": :", "- ", "&a",
                                          "*a", "!!binary x", "!!python/object:os.system", "{", "[", "'", '"',
                                          "%TAG", "@", "`"]) + text[i:]
        lines = text.splitlines(keepends=True)
        j = rng.randrange(len(lines)) if lines else 0
        if op < 0.7 and lines:
            lines.insert(j, lines[j])                                # a duplicated line (duplicate keys)
        elif lines:
            lines[j] = " " * rng.choice([1, 3, 8]) + lines[j]        # broken indentation
        return "".join(lines)


def garbage_body(rng: random.Random, text: str) -> tuple[bytes, str]:
    """A malformed API request body, and what it is."""
    choices: list[tuple[Callable[[], bytes], str]] = [
        (lambda: b"", "empty"),
        (lambda: b"[]", "a list"),
        (lambda: b"null", "null"),
        (lambda: b'{"documents": "x"}', "documents a string"),
        (lambda: b'{"documents": [{"text": 1}]}', "text a number"),
        (lambda: b'{"documents": [{"text": "a: 1", "file": ["x"]}]}', "file a list"),
        (lambda: json.dumps({"documents": [{"text": text}], "namespace": 5}).encode(), "namespace a number"),
        (lambda: json.dumps({"documents": [{"text": text}], "dry_run": "yes"}).encode(), "dry_run a string"),
        (lambda: b'{"documents": ' + b"[" * 5000 + b"]" * 5000 + b"}", "deep JSON"),
        (lambda: json.dumps({"documents": [{"text": text}]}).encode()[:rng.randrange(1, 40)],
         "truncated JSON"),
        (lambda: b'{"documents": [{"text": "\xff\xfe"}]}', "invalid UTF-8"),
        (lambda: b'{"documents": [{"text": "\\ud800"}]}', "lone surrogate escape"),    # 422: valid JSON
        (lambda: b'{"dry_run": ' + b"9" * 5000 + b"}", "a 5000-digit number"),
    ]
    make, what = rng.choice(choices)
    return make(), what


# --- the run ------------------------------------------------------------------------------------------------

@dataclass
class FuzzReport:
    documents: int = 0
    accepted: int = 0
    rejected: int = 0
    api_requests: int = 0
    api_status: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)        # tracebacks, 500s, disagreements, bad NACKs
    node_only_nacks: list[str] = field(default_factory=list)  # allowed, each with its readable reason
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.documents} documents ({self.accepted} accepted, {self.rejected} rejected), "
                f"{self.api_requests} API requests {dict(sorted(self.api_status.items()))}, "
                f"{len(self.failures)} failures, {len(self.node_only_nacks)} node-only NACKs, "
                f"RSS {self.rss_start_mb:.0f} -> {self.rss_end_mb:.0f} MB, {self.seconds:.1f} s")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _settled(mesh: Mesh, timeout: float) -> None:
    """Every pending push made, and every proxy has answered (ACK or NACK) what it was last sent."""
    await mesh.cp.flush()
    status = mesh.cp.status
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [n for n in status.connected() for t in (status.proxy(n).types if status.proxy(n) else {})
                   if status.type_state(n, t) not in ("SYNCED", NACKED, "NOT SENT")]
        if not pending:
            return
        await asyncio.sleep(0.05)


def _check_nacks(mesh: Mesh, report: FuzzReport, seen: set[tuple[str, str, str]], recent: list[str]) -> None:
    for entry in mesh.cp.status.to_dict():
        for short, ts in entry["types"].items():
            nack = ts.get("nack")
            if not nack or ts.get("status") != NACKED:
                continue
            key = (entry["proxy"], short, nack["version"])
            if key in seen:
                continue
            seen.add(key)
            line = f"{entry['proxy'].split('~')[2]} {short}: {nack['reason']}"
            if node_only(nack["reason"]):
                report.node_only_nacks.append(line)
            else:
                report.failures.append(f"NACK of accepted config: {line}\n  last accepted: "
                                       + "\n  ".join(recent[-5:]))


async def run_fuzz(mesh: Mesh, count: int, seed: int, *, check_every: int = 50,
                   settle_timeout: float = 5.0, garbage_share: float = 0.1) -> FuzzReport:
    """Fuzz ``count`` documents through validate, the store and the API of ``mesh`` (proxies connected)."""
    report = FuzzReport()
    mutator = Mutator(load_samples(), seed)
    rng = random.Random(seed + 1)
    seen: set[tuple[str, str, str]] = set()
    recent: list[str] = []
    t0 = time.monotonic()
    report.rss_start_mb = _rss_mb()
    async with mesh.api_client(timeout=60) as api:
        for i in range(count):
            text, namespace = mutator.document()
            report.documents += 1
            # 1. validate (the loader, as `mizzen validate` runs it)
            try:
                loaded = load_text(text, f"fuzz-{i}.yaml", namespace)
            except Exception as e:   # a traceback
                report.failures.append(f"validate raised {type(e).__name__}: {e} on:\n{text[:500]}")
                continue
            ok = not loaded.errors
            report.accepted += ok
            report.rejected += not ok
            # 2. apply through the store (half of them) or 3. the raw API (all of them; the API must agree)
            if ok and rng.random() < 0.5:
                try:
                    mesh.cp.store.apply(loaded.configs)
                except Exception as e:
                    report.failures.append(f"store.apply raised {type(e).__name__}: {e} on:\n{text[:500]}")
            body: Any = {"documents": [{"file": f"fuzz-{i}.yaml", "text": text}], "namespace": namespace}
            try:
                r = await api.post("/apis/apply", content=json.dumps(body).encode(),
                                   headers={"content-type": "application/json"})
            except Exception as e:
                report.failures.append(f"API request failed: {type(e).__name__}: {e}")
                continue
            report.api_requests += 1
            report.api_status[r.status_code] = report.api_status.get(r.status_code, 0) + 1
            want = 200 if ok else 422
            if r.status_code != want and not (r.status_code == 400 and namespace is not None and not ok):
                verdict = "ok" if ok else "errors"
                report.failures.append(f"API answered {r.status_code} (validate: {verdict}): "
                                       f"{r.text[:300]}\n  on: {text[:300]!r} namespace={namespace!r}")
            if ok:
                recent.append(text[:2000])
            if rng.random() < garbage_share:
                raw, what = garbage_body(rng, text)
                g = await api.post("/apis/apply", content=raw, headers={"content-type": "application/json"})
                report.api_requests += 1
                report.api_status[g.status_code] = report.api_status.get(g.status_code, 0) + 1
                if g.status_code not in (400, 413, 422) or not ({"error", "errors"} & set(g.json())):
                    report.failures.append(f"garbage body ({what}) answered {g.status_code}: {g.text[:200]}")
            if (i + 1) % check_every == 0 or i + 1 == count:
                await _settled(mesh, settle_timeout)
                _check_nacks(mesh, report, seen, recent)
                recent.clear()
    report.rss_end_mb = _rss_mb()
    report.seconds = time.monotonic() - t0
    return report
