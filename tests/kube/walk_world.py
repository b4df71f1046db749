"""The seed's Bookinfo walk on the test cluster (tests/kube/test_kube_walk.py): what it runs, how it talks.

* :data:`INSTALL_SETS`: the ``--set`` flags the walk gives ``mizzen install`` (two istiod replicas, a short
  Lease, one Envoy worker, a short drain).
* :class:`InstalledIstiod`: the installed istiod pods as the node agent runs them: their HTTP API (pod IP,
  port 15014) and a SIGKILL of one pod's process.
* :func:`pod_requests`: HTTP requests sent from inside a pod's network namespace (``ip netns exec``) by a
  small client process, as the pod's app would send them: with transparent capture the sidecar sees them,
  with no ``HTTP_PROXY`` anywhere.
* :func:`echo_app_container`: a tiny HTTP app (answers ``{"service", "version", "path"}``) for section 5's
  demo services.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

MIZZEN = str(Path(sys.executable).parent / "mizzen")
SYSTEM_NS = "istio-system"


LEASE_TTL_S = 6   # $MIZZEN_LEADER_ELECTION_TTL for the installed istiod replicas (Istio's default is 30 s)
# what the walk gives `mizzen install`: two istiod replicas with a short Lease; one Envoy worker per proxy
# (two cores are shared by the whole test run, and ROUND_ROBIN is per worker); a short drain on deletion
# and the analyzers' messages in the config objects' status (Istio's global.istiod.enableAnalysis)
INSTALL_SETS = ("values.pilot.replicaCount=2", f"values.pilot.env.MIZZEN_LEADER_ELECTION_TTL={LEASE_TTL_S}s",
                "values.global.istiod.enableAnalysis=true", "meshConfig.defaultConfig.concurrency=1",
                "meshConfig.defaultConfig.terminationDrainDuration=2s")


class InstalledIstiod:
    """The istiod pods ``mizzen install`` made, run by the node agent ``node``: their HTTP API on the pod IP
    (port 15014, the install's ``--http-port``), with the token each keeps in its state dir (the pod's
    ``local-certs`` volume)."""

    def __init__(self, cluster: Any, node: Any) -> None:
        self.cluster = cluster
        self.node = node

    def runs(self) -> list[Any]:
        """The node agent's runs of the istiod pods (not being deleted), by pod name."""
        return sorted((r for r in list(self.node.pods.values())
                       if r.namespace == SYSTEM_NS and not r.stopping
                       and (r.pod["metadata"].get("labels") or {}).get("app") == "istiod"),
                      key=lambda r: r.name)

    def run(self, name: str) -> Any:
        (run,) = [r for r in self.runs() if r.name == name]
        return run

    def api_get_all(self, path: str) -> list[Any]:
        """``path`` from every replica that answers 200 (a proxy's config lives on the replica it is
        connected to)."""
        out = []
        for run in self.runs():
            token = (run.dir / "volumes" / "local-certs" / "token").read_text().strip()
            req = urllib.request.Request(f"http://{run.ip}:15014{path}",
                                         headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    out.append(json.loads(r.read()))
            except (OSError, ValueError):
                continue
        return out

    def kill(self, name: str) -> int:
        """SIGKILL to the process group of pod ``name``'s ``discovery`` container (no Lease released, no
        goodbye); the node agent restarts it as a kubelet would (restartPolicy Always). Its PID."""
        proc = self.run(name).containers["discovery"].proc
        assert proc is not None and proc.returncode is None
        os.killpg(proc.pid, signal.SIGKILL)
        return int(proc.pid)

    def log(self) -> str:
        return "\n".join(f"--- {r.name}\n" + p.read_text(errors="replace")[-3000:] for r in self.runs()
                         for p in (r.dir / "logs").glob("*.log"))


ECHO = ("import json, os, http.server\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        b = json.dumps({'service': os.environ['SVC'], 'version': os.environ['VER'],\n"
        "                        'path': self.path, 'pod': os.environ['POD_NAME']}).encode()\n"
        "        self.send_response(200); self.send_header('content-type', 'application/json')\n"
        "        self.send_header('content-length', str(len(b))); self.end_headers(); self.wfile.write(b)\n"
        "    def log_message(self, *a): pass\n"
        "http.server.ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n")


def echo_app_container(service: str, version: str, port: int) -> dict[str, Any]:
    """A container answering every GET with ``{"service", "version", "path", "pod"}`` as JSON."""
    return {"name": service, "image": "mizzen/echo:dev", "command": [sys.executable, "-c", ECHO],
            "ports": [{"containerPort": port, "name": "http"}],
            "env": [{"name": "SVC", "value": service}, {"name": "VER", "value": version},
                    {"name": "PORT", "value": str(port)}],
            "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1}}


# Sends the requests one after another; prints one JSON line: [[status, body, headers, seconds], ...].
# Bounded: every request times out after its own limit.
CLIENT = textwrap.dedent("""\
    import json, sys, time, urllib.error, urllib.request
    url, n, headers, timeout = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), float(sys.argv[4])
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k): return None
    opener = urllib.request.build_opener(NoRedirect, urllib.request.ProxyHandler({}))
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        try:
            r = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
            status, body, hdrs = r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            status, body, hdrs = e.code, e.read(), dict(e.headers)
        except OSError as e:
            status, body, hdrs = 0, str(e).encode(), {}
        out.append([status, body.decode(errors="replace")[:4000], hdrs, time.monotonic() - t0])
    print(json.dumps(out))
    """)


def pod_requests(netns: str, url: str, n: int = 1, headers: dict[str, str] | None = None,
                 timeout: float = 10.0) -> list[tuple[int, str, dict[str, str], float]]:
    """``n`` GETs of ``url`` from inside the pod network namespace ``netns`` (its /etc/hosts resolves
    Service names), as root: with Istio's capture (only uid 1337 excluded) they go through the sidecar."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, url, str(n),
                        json.dumps(headers or {}), str(timeout)],
                       capture_output=True, text=True, env=env, timeout=30 + n * (timeout + 1))
    if r.returncode != 0:
        raise AssertionError(f"the in-pod client failed: {r.stderr[-2000:]}")
    return [(int(s), b, h, float(t)) for s, b, h, t in json.loads(r.stdout)]


# Runs mizzen's fortio-like load generator (no proxy: the requests leave as the app's would) and prints one
# JSON line: {"codes": {...}, "overflow": n, "summary": "..."}.
LOAD = textwrap.dedent("""\
    import asyncio, json, sys
    from mizzen.loadgen import run_load
    r = asyncio.run(run_load(sys.argv[1], concurrency=int(sys.argv[2]), total=int(sys.argv[3]), deadline=30))
    print(json.dumps({"codes": {str(k): v for k, v in r.codes.items()}, "overflow": r.flags["overflow"],
                      "summary": r.summary()}))
    """)


def pod_load(netns: str, url: str, concurrency: int, total: int) -> tuple[dict[int, int], int, str]:
    """(codes, overflow 503s, fortio-like summary) of ``total`` requests at ``concurrency`` from ``netns``."""
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", LOAD, url, str(concurrency),
                        str(total)], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()})
    if r.returncode != 0:
        raise AssertionError(f"the in-pod load failed: {r.stderr[-2000:]}")
    out = json.loads(r.stdout)
    return {int(k): v for k, v in out["codes"].items()}, int(out["overflow"]), str(out["summary"])


def until(check: Any, timeout: float = 30.0, interval: float = 0.5) -> Any:
    """Call ``check`` until it returns without an AssertionError (bounded); re-raise the last one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)
