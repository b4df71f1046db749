"""HTTP endpoints about the runner's pods, served by the control plane's API server when a runner is attached
(``mizzen demo``): ``GET /apis/pods?namespace=`` (what ``status()`` reports, as JSON) and
``GET /apis/pods/{ns}/{name}/logs?container=<app container|istio-proxy>&tail=N`` (the app's log file, or the
sidecar's Envoy output and log from the agent's work dir; ``offsets`` in the answer, sent back as
``&offsets=a,b``, gives only the lines written since, for ``logs -f``). ``mizzen get pods``/``logs`` use them.
``GET /apis/addresses/{ip}`` answers whether the runner allocated that pod IP (``{"allocated": bool}``): a
control plane in another process asks it before it accepts a workload registration.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from mizzen.runner.cadvisor import exposition
from mizzen.runner.pod import PodStatus
from mizzen.runner.pod_object import pod_object
from mizzen.runner.runner import LocalRunner

__all__ = ["PROXY_CONTAINER", "PodsApi", "container_names", "lines_since", "pod_to_dict", "tail_lines"]

PROXY_CONTAINER = "istio-proxy"
MAX_LOG_BYTES = 4 * 1024 * 1024          # a log request reads at most this much from the end of a file


def pod_to_dict(s: PodStatus, sidecar_logs: list[str] | None = None,
                events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON shape of one pod (``GET /apis/pods`` items): the runner's view, kubectl's STATUS text,
    the Kubernetes ``v1 Pod`` object (``object``) and recent events (oldest first)."""
    return {
        "name": s.name,
        "namespace": s.namespace,
        "deployment": s.deployment,
        "ready": s.ready_count,
        "is_ready": s.ready,
        "registered": s.registered,
        "phase": s.phase,
        "status": s.status_text,
        "reason": s.reason,
        "restarts": s.restarts + s.sidecar_restarts,
        "app_restarts": s.restarts,
        "pod_ip": s.pod_ip,
        "app_host": s.app_host,
        "age_s": round(s.age_s, 3),
        "start_time": time.time() - s.age_s,
        "labels": dict(s.labels),
        "service_account": s.service_account,
        "message": s.message,
        "sidecar": {
            "state": s.sidecar,
            "restarts": s.sidecar_restarts,
            "pid": s.sidecar_pid,
            "log_paths": sidecar_logs or [],
        },
        "containers": [dataclasses.asdict(c) for c in s.containers],
        "container_names": container_names(s),
        "object": pod_object(s),
        "events": events or [],
        "admin": s.admin,
    }


def container_names(s: PodStatus) -> list[str]:
    """The pod's containers as kubectl names them: the template's (started or not), then istio-proxy."""
    names = [c.name for c in s.specs] or [c.name for c in s.containers]
    return names + ([PROXY_CONTAINER] if s.sidecar != "none" else [])


def tail_lines(paths: list[Path], tail: int | None) -> list[str]:
    """The lines of ``paths`` (in order; missing files skipped), the last ``tail`` of them if given."""
    lines: list[str] = []
    for path in paths:
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - MAX_LOG_BYTES))
                data = f.read()
        except OSError:
            continue
        text = data.decode(errors="replace").splitlines()
        if size > MAX_LOG_BYTES and text:
            text = text[1:]                   # the first line was cut
        lines.extend(text)
    if tail is None or tail < 0:
        return lines
    return lines[len(lines) - tail:] if tail else []


def lines_since(path: Path, offset: int) -> tuple[list[str], int]:
    """The complete lines written to ``path`` after byte ``offset`` (from 0 if the file shrank: rotated or
    truncated), at most :data:`MAX_LOG_BYTES` at a time, and the offset to continue from."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            if offset > size:
                offset = 0
            f.seek(offset)
            data = f.read(MAX_LOG_BYTES)
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    if end == 0 and len(data) == MAX_LOG_BYTES:       # one huge line: give it as it is
        end = len(data)
    return data[:end].decode(errors="replace").splitlines(), offset + end


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


class PodsApi:
    """The pod routes over the runner ``runner()`` returns (None while the demo is still starting it)."""

    def __init__(self, runner: Callable[[], LocalRunner | None],
                 events: Callable[[str, str], list[dict[str, Any]]] | None = None) -> None:
        self._runner = runner
        self._events = events

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/apis/pods", self.list_pods),
            web.get("/apis/pods/{namespace}/{name}/logs", self.logs),
            web.get("/apis/addresses/{address}", self.address),
            web.get("/metrics/cadvisor", self.cadvisor),
        ]

    def _get_runner(self) -> LocalRunner:
        runner = self._runner()
        if runner is None:
            raise web.HTTPServiceUnavailable(reason="the workloads are still starting")
        return runner

    def _sidecar_logs(self, runner: LocalRunner, namespace: str, name: str) -> list[Path]:
        """Envoy's stdout/stderr and its log file for a pod's sidecar (or the gateway)."""
        agents: list[object] = [gw for gw in runner.gateways if gw.spec.name == name]
        for dep in runner.deployments.values():
            agents.extend(p.sidecar for p in dep.pods
                          if p.name == name and p.spec.namespace == namespace and p.sidecar is not None)
        out: list[Path] = []
        for agent in agents:
            for attr in ("output_path", "log_path"):
                try:
                    path = getattr(agent, attr, None)
                except RuntimeError:          # AgentError: not started, no work dir yet
                    path = None
                if isinstance(path, Path):
                    out.append(path)
        return out

    async def list_pods(self, request: web.Request) -> web.Response:
        runner = self._get_runner()
        namespace = request.query.get("namespace") or None
        items = [pod_to_dict(s, [str(p) for p in self._sidecar_logs(runner, s.namespace, s.name)],
                             self._events(s.namespace, s.name) if self._events else None)
                 for s in runner.pods(namespace)]
        return _json({"items": items})

    async def cadvisor(self, request: web.Request) -> web.Response:
        """The kubelet's ``/metrics/cadvisor`` for the local pods (CPU and working set per container)."""
        runner = self._get_runner()
        return web.Response(text=exposition(runner.status()),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def address(self, request: web.Request) -> web.Response:
        runner = self._get_runner()
        return _json({"allocated": runner.addresses.allocated(request.match_info["address"])})

    async def logs(self, request: web.Request) -> web.Response:
        runner = self._get_runner()
        ns, name = request.match_info["namespace"], request.match_info["name"]
        pod = next((s for s in runner.pods(ns) if s.name == name), None)
        if pod is None:
            return _json({"error": f'pods "{name}" not found in namespace {ns}'}, 404)
        tail: int | None = None
        if request.query.get("tail") not in (None, "", "-1"):
            try:
                tail = int(request.query["tail"])
            except ValueError:
                return _json({"error": f"tail must be an integer, not {request.query['tail']!r}"}, 400)
        names = container_names(pod)
        container = request.query.get("container") or (names[0] if names else PROXY_CONTAINER)
        if container not in names:          # Kubernetes' wording, with the list kubectl users know
            return _json({"error": f'container "{container}" not found in pod "{name}"; '
                                   f"choose one of: [{' '.join(names)}]"}, 400)
        if container == PROXY_CONTAINER and pod.sidecar != "none":
            paths = self._sidecar_logs(runner, ns, name)
        else:
            paths = [Path(c.log_path) for c in pod.containers if c.name == container]
        if not paths:                       # in the template but never started
            why = f": {pod.reason}: {pod.message}" if pod.reason else ""
            return _json({"error": f'container "{container}" in pod "{name}" is waiting to start{why}'},
                         400)
        since = request.query.get("offsets")
        if since is None:
            lines, offsets = tail_lines(paths, tail), [_size(p) for p in paths]
        else:
            try:
                starts = [int(x) for x in since.split(",")] if since else []
            except ValueError:
                return _json({"error": f"offsets must be comma-separated integers, not {since!r}"}, 400)
            starts += [0] * (len(paths) - len(starts))
            lines, offsets = [], []
            for path, start in zip(paths, starts, strict=False):
                got, offset = lines_since(path, start)
                lines.extend(got)
                offsets.append(offset)
        return _json({"namespace": ns, "pod": name, "container": container,
                      "paths": [str(p) for p in paths], "lines": lines, "offsets": offsets})
