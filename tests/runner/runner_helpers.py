"""Shared pieces for runner tests: a fake registrar at the WorkloadRegistrar seam, a tiny echo app (reports
its argv and env over HTTP) usable as a container command, and process liveness checks.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

import addrblocks
from mizzen.registry.model import Workload


def private_nets() -> tuple[str, str]:
    """Pod and app networks of their own (127.100.<x>.0/24 and 127.101.<x>.0/24, the block claimed with
    ``addrblocks``: no other call and no other test process gets them)."""
    x = addrblocks.claim(100)
    return f"127.100.{x}.0/24", f"127.101.{x}.0/24"


@dataclass
class FakeRegistrar:
    """Records register/deregister calls (async, like an HTTP client would be)."""

    events: list[tuple[str, str, Workload | None]] = field(default_factory=list)
    live: dict[tuple[str, str], Workload] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def register(self, workload: Workload) -> None:
        self.events.append(("register", workload.name, workload))
        self.live[(workload.namespace, workload.name)] = workload
        self.changed.set()

    async def deregister(self, namespace: str, name: str) -> None:
        self.events.append(("deregister", name, None))
        self.live.pop((namespace, name), None)
        self.changed.set()

    def count(self, action: str, name: str) -> int:
        return sum(1 for a, n, _ in self.events if a == action and n == name)


ECHO_APP = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"argv": sys.argv[1:], "env": dict(os.environ)}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
"""


def echo_deployment(
    name: str, replicas: int = 1, port: int = 8000, args: list[str] | None = None,
    env: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    pod_labels = labels or {"app": name, "version": "v1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": pod_labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": f"sa-{name}",
                    "containers": [{
                        "name": "echo",
                        "image": "example/echo:1",
                        "command": ["$(MIZZEN_PYTHON)", "-c", ECHO_APP],
                        "args": args or [],
                        "env": env or [],
                        "ports": [{"containerPort": port, "name": "http-echo"}],
                    }],
                },
            },
        },
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
