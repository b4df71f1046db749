"""On-disk state of the config store: one JSON file per object, written atomically.

Layout: ``<state>/objects/<Kind>/<namespace or _cluster>/<name>.json``, and registered workloads (the pods
of the local mesh) under ``<state>/workloads/<namespace>/<name>.json``. Writes go to a temporary file in
the same directory, are fsynced and renamed over the target (then the directory is fsynced), so a crash leaves
either the old or the new object, never half of one. A file that cannot be read back is reported, not fatal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mizzen.config.model import Config, ConfigKey, Source
from mizzen.registry.model import Workload

log = logging.getLogger(__name__)

__all__ = [
    "LoadProblem",
    "StateDir",
    "config_to_record",
    "record_to_config",
]

CLUSTER_SCOPE_DIR = "_cluster"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LoadProblem:
    """A state file that could not be loaded (kept on disk untouched)."""

    path: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "error": self.error}


def config_to_record(config: Config) -> dict[str, Any]:
    """The JSON form of a stored object (manifest plus store bookkeeping)."""
    record = config.to_manifest()
    record["mizzen"] = {
        "format": FORMAT_VERSION,
        "created": config.created,
        "source": {"file": config.source.file, "line": config.source.line} if config.source else None,
        "lines": dict(config.lines),
    }
    return record


def record_to_config(record: Any) -> Config:
    """Inverse of :func:`config_to_record`; raises ValueError on anything malformed."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    meta = record.get("metadata")
    extra = record.get("mizzen") or {}
    if not isinstance(meta, dict) or not isinstance(extra, dict):
        raise ValueError("metadata/mizzen must be objects")
    kind, api_version, name = record.get("kind"), record.get("apiVersion"), meta.get("name")
    if not (isinstance(kind, str) and isinstance(api_version, str) and isinstance(name, str) and name):
        raise ValueError("kind, apiVersion and metadata.name are required")
    namespace = meta.get("namespace") or ""
    spec = record.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict) or not isinstance(namespace, str):
        raise ValueError("spec must be an object and metadata.namespace a string")
    src = extra.get("source")
    source = Source(str(src["file"]), int(src["line"])) if isinstance(src, dict) else None
    lines = extra.get("lines") or {}
    return Config(
        kind=kind,
        api_version=api_version,
        name=name,
        namespace=namespace,
        spec=spec,
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        source=source,
        created=float(extra.get("created") or 0.0),
        lines={str(k): int(v) for k, v in dict(lines).items()},
    )


class StateDir:
    """Reads and writes object files under ``<root>/objects``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.workloads = self.root / "workloads"

    def path_for(self, key: ConfigKey) -> Path:
        ns = key.namespace or CLUSTER_SCOPE_DIR
        for part in (key.kind, ns, key.name):
            if "/" in part or part in ("", ".", "..") or "\0" in part:
                raise ValueError(f"{key}: unsafe name for a state file")
        return self.objects / key.kind / ns / f"{key.name}.json"

    def write(self, config: Config) -> None:
        data = json.dumps(config_to_record(config), sort_keys=True, indent=1, default=str).encode()
        atomic_write(self.path_for(config.key), data)

    def remove(self, key: ConfigKey) -> None:
        remove_file(self.path_for(key))

    def load_all(self) -> tuple[list[Config], list[LoadProblem]]:
        """Every readable object, and a problem per unreadable file (sorted by path)."""
        configs: list[Config] = []
        problems: list[LoadProblem] = []
        if not self.objects.is_dir():
            return configs, problems
        for path in sorted(self.objects.glob("*/*/*.json")):
            try:
                config = record_to_config(json.loads(path.read_text()))
                expected = self.path_for(config.key)
                if expected != path:
                    raise ValueError(f"object {config.key} does not belong in this file")
            except (OSError, ValueError, TypeError, KeyError) as e:
                problem = LoadProblem(str(path), f"{type(e).__name__}: {e}")
                log.error("state file %s is unreadable, ignored: %s", path, problem.error)
                problems.append(problem)
                continue
            configs.append(config)
        return configs, problems


    # --- registered workloads ------------------------------------------------------------------------------
    def workload_path(self, namespace: str, name: str) -> Path:
        for part in (namespace, name):
            if "/" in part or part in ("", ".", "..") or "\0" in part:
                raise ValueError(f"workload {namespace}/{name}: unsafe name for a state file")
        return self.workloads / namespace / f"{name}.json"

    def write_workload(self, w: Workload) -> None:
        record = dataclasses.asdict(w)
        atomic_write(self.workload_path(w.namespace, w.name), json.dumps(record, sort_keys=True).encode())

    def remove_workload(self, namespace: str, name: str) -> None:
        remove_file(self.workload_path(namespace, name))

    def load_workloads(self) -> tuple[list[Workload], list[LoadProblem]]:
        out: list[Workload] = []
        problems: list[LoadProblem] = []
        if not self.workloads.is_dir():
            return out, problems
        for path in sorted(self.workloads.glob("*/*.json")):
            try:
                out.append(Workload(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as e:
                problems.append(LoadProblem(str(path), f"{type(e).__name__}: {e}"))
                log.error("workload file %s is unreadable, ignored: %s", path, e)
        return out, problems


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_file(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
