"""pilot-agent's command line inside an injected pod (the ``proxyv2`` image's entrypoint; the node agent runs
it as ``python -m mizzen.agent``):

- ``proxy sidecar|router --domain <ns>.svc.cluster.local [--proxyLogLevel=L] ...``: the proxy's identity and
  settings come from the pod, as pilot-agent takes them: ``POD_NAME``, ``POD_NAMESPACE``, ``INSTANCE_IP``,
  ``SERVICE_ACCOUNT`` (downward API env), the pod's labels from ``/etc/istio/pod/labels`` (the downward-API
  volume), ``PROXY_CONFIG`` (the merged ProxyConfig JSON: ``discoveryAddress``, ``controlPlaneAuthPolicy``,
  ``terminationDrainDuration``, ``concurrency``, ``proxyStatsMatcher``), ``ISTIO_META_INTERCEPTION_MODE``,
  ``ISTIO_KUBE_APP_PROBERS`` and ``ISTIO_PROMETHEUS_ANNOTATIONS``. It serves ``:15021/healthz/ready``
  (200 once Envoy is LIVE with its first listeners and clusters), the app probes on ``:15020`` next to the
  merged metrics, and on SIGTERM drains the inbound listeners for up to ``terminationDrainDuration`` before
  stopping Envoy.
- ``istio-iptables [flags]``: istio-init's capture rules, applied (:mod:`mizzen.agent.iptables`).
- ``wait [--timeoutSeconds N] [--periodMillis N]``: until ``:15021/healthz/ready`` answers 200 (the
  ``postStart`` hook of ``holdApplicationUntilProxyStarts``).

Paths the pod mounts are found through the node agent's ``MIZZEN_MOUNTS`` map (no mount namespace there).

Control-plane identity: with ``controlPlaneAuthPolicy: MUTUAL_TLS`` (Istio's default) the agent proves the
pod's identity with its projected ``istio-token`` (the CA checks it with a TokenReview), trusts the
``istio-ca-root-cert`` root, and speaks the CA over TLS to ``CA_ADDR`` (else ``discoveryAddress``) and xDS
over TLS to ``discoveryAddress`` (see :mod:`mizzen.agent.kube_identity`); with ``NONE`` it speaks plaintext
ADS to ``discoveryAddress`` (Istio's 15010 semantics).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from mizzen.agent.app_health import APP_PROBERS_ENV, AppProbers, ProbersError
from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.envoy import Agent, AgentError, AgentOptions
from mizzen.lifecycle import run_until_signal

__all__ = ["HEALTH_PORT", "PilotError", "main", "proxy_from_env"]

HEALTH_PORT = 15021
STATUS_PORT = 15020
SUBCOMMANDS = ("proxy", "istio-iptables", "wait")
log = logging.getLogger("mizzen.agent.pilot")


class PilotError(ValueError):
    """The pod's environment cannot make a proxy (one line)."""


def mounted(path: str, env: Mapping[str, str]) -> Path:
    """``path`` as this process sees it: through ``MIZZEN_MOUNTS`` (longest mountPath first)."""
    try:
        mounts: dict[str, str] = json.loads(env.get("MIZZEN_MOUNTS") or "{}")
    except json.JSONDecodeError:
        mounts = {}
    for mp in sorted(mounts, key=len, reverse=True):
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            return Path(mounts[mp] + path[len(mp.rstrip("/")):])
    return Path(path)


def parse_downward(text: str) -> dict[str, str]:
    """A downward-API ``metadata.labels``/``annotations`` file: ``key="json string"`` lines."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if not sep:
            continue
        try:
            out[k] = json.loads(v) if v.startswith('"') else v
        except json.JSONDecodeError:
            out[k] = v
    return out


def _duration_s(value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    from mizzen.config.durations import parse_duration

    try:
        seconds = parse_duration(str(value))
    except ValueError:
        seconds = None
    if seconds is None:
        raise PilotError(f"PROXY_CONFIG: bad duration {value!r}")
    return float(seconds)


def proxy_from_env(kind: str, domain: str, env: Mapping[str, str]) -> tuple[ProxySpec, AgentOptions, Any]:
    """(spec, options, app probers) from the pod's environment (see the module docstring)."""
    from mizzen.core.proxy import ProxyType

    missing = [k for k in ("POD_NAME", "POD_NAMESPACE", "INSTANCE_IP") if not env.get(k)]
    if missing:
        raise PilotError(f"{', '.join(missing)} not set (the downward API env of the istio-proxy container)")
    try:
        pc = yaml.safe_load(env.get("PROXY_CONFIG") or "{}") or {}
    except yaml.YAMLError:
        raise PilotError("PROXY_CONFIG: not JSON/YAML") from None
    if not isinstance(pc, dict):
        raise PilotError("PROXY_CONFIG: want a ProxyConfig object")
    address = str(pc.get("discoveryAddress") or "istiod.istio-system.svc:15012")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise PilotError(f"PROXY_CONFIG.discoveryAddress {address!r}: want host:port")
    policy = str(pc.get("controlPlaneAuthPolicy") or "MUTUAL_TLS")
    identity = None
    if policy == "MUTUAL_TLS":
        from mizzen.agent.identity import IdentityError
        from mizzen.agent.kube_identity import kube_identity

        try:   # the CA at CA_ADDR (pilot-agent's default: the discovery address); xDS at the latter
            identity = kube_identity(env, ca_address=env.get("CA_ADDR", "").strip() or address)
        except IdentityError as e:
            raise PilotError(str(e)) from None
        identity = dataclasses.replace(identity, xds_address=address)
    elif policy != "NONE":
        raise PilotError(f"PROXY_CONFIG.controlPlaneAuthPolicy {policy!r}: want MUTUAL_TLS or NONE")
    ns = env["POD_NAMESPACE"]
    labels_file = mounted("/etc/istio/pod/labels", env)
    labels = parse_downward(labels_file.read_text()) if labels_file.is_file() else {}
    prom: dict[str, str] = {}
    if env.get("ISTIO_PROMETHEUS_ANNOTATIONS"):
        try:
            prom = json.loads(env["ISTIO_PROMETHEUS_ANNOTATIONS"])
        except json.JSONDecodeError:
            raise PilotError("ISTIO_PROMETHEUS_ANNOTATIONS: not JSON") from None
    cluster_domain = domain.removeprefix(f"{ns}.svc.") if domain else "cluster.local"
    ptype = ProxyType.ROUTER if kind == "router" else ProxyType.SIDECAR
    spec = ProxySpec(
        type=ptype, ip=env["INSTANCE_IP"], namespace=ns, name=env["POD_NAME"], labels=labels,
        service_account=env.get("SERVICE_ACCOUNT") or "default", xds_host=host, xds_port=int(port),
        interception_mode=env.get("ISTIO_META_INTERCEPTION_MODE") or "REDIRECT", http_proxy_port=0,
        app_host="127.0.0.1", domain=cluster_domain or "cluster.local",
        proxy_stats_matcher=pc.get("proxyStatsMatcher"),
        app_metrics_port=int(prom["port"]) if str(prom.get("port", "")).isdigit() else None,
        app_metrics_path=str(prom.get("path") or "/metrics"))
    try:
        probers = AppProbers.from_env(env.get(APP_PROBERS_ENV))
    except ProbersError as e:
        raise PilotError(str(e)) from None
    work = mounted("/etc/istio/proxy", env)
    drain = _duration_s(pc.get("terminationDrainDuration"), 5.0)
    opts = AgentOptions(concurrency=int(pc.get("concurrency") or 2), drain_time_s=max(1, round(drain)),
                        work_dir=work if work.is_dir() else None, status_routes=probers.routes(),
                        identity=identity)
    return spec, opts, probers


class HealthServer:
    """``:15021/healthz/ready``: 200 once Envoy is LIVE (it has its first listeners and clusters)."""

    def __init__(self, agent: Agent, host: str, port: int = HEALTH_PORT) -> None:
        self.agent, self.host, self.port = agent, host, port
        self._runner: web.AppRunner | None = None

    async def ready(self, _request: web.Request) -> web.Response:
        try:
            body = (await self.agent.admin_get("/ready", timeout=2.0)).strip()
        except (TimeoutError, aiohttp.ClientError, OSError):
            body = "not started"
        if body == "LIVE" and not self.agent._stopping:
            return web.Response(text="")
        return web.Response(status=503, text=f"Envoy is not ready: {body}\n")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz/ready", self.ready)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _proxy_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pilot-agent proxy", description="Run the proxy of an injected pod.")
    p.add_argument("kind", choices=["sidecar", "router"])
    p.add_argument("--domain", default="")
    p.add_argument("--proxyLogLevel", default="warning")
    p.add_argument("--proxyComponentLogLevel", default="")
    p.add_argument("--log_output_level", default="default:info")
    p.add_argument("--log_as_json", action="store_true")
    p.add_argument("--stsPort", type=int, default=0)
    p.add_argument("--outlierLogPath", default="")
    return p


def _agent_log_level(spec: str) -> str:
    level = spec.rpartition(":")[2].strip().upper() or "INFO"
    return {"WARN": "WARNING", "NONE": "CRITICAL", "FATAL": "CRITICAL", "DEBUG": "DEBUG"}.get(level, level) \
        if level in ("WARN", "NONE", "FATAL", "DEBUG", "INFO", "ERROR", "WARNING") else "INFO"


async def run_proxy(spec: ProxySpec, opts: AgentOptions) -> None:
    agent = Agent(spec, opts)
    health = HealthServer(agent, "0.0.0.0")   # the pod's own namespace: Envoy's :15021 listens on all too

    async def start() -> None:
        await agent.start(ready_timeout=None)
        await health.start()

    async def stop() -> None:
        await health.stop()
        await agent.stop(timeout=float(opts.drain_time_s) + 5.0)

    def announce() -> None:
        print(f"mizzen agent: node={agent.node_id} xds={spec.xds_host}:{spec.xds_port} "
              f"health=http://{spec.ip}:{HEALTH_PORT}/healthz/ready pid={agent.pid}", flush=True)

    await run_until_signal(start, stop, announce)


def proxy_main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    a = _proxy_parser().parse_args(list(argv))
    logging.basicConfig(level=_agent_log_level(a.log_output_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        spec, opts, _ = proxy_from_env(a.kind, a.domain, env)
    except (PilotError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    level = a.proxyLogLevel if a.proxyLogLevel in ("trace", "debug", "info", "warning", "error",
                                                   "critical", "off") else "warning"
    opts.log_level = level
    try:
        asyncio.run(run_proxy(spec, opts))
    except AgentError as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


def wait_main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    p = argparse.ArgumentParser(prog="pilot-agent wait", description="Wait until the proxy is ready.")
    p.add_argument("--timeoutSeconds", type=int, default=60)
    p.add_argument("--periodMillis", type=int, default=500)
    p.add_argument("--url", default="")
    a = p.parse_args(list(argv))
    # loopback: the proxy user's calls to the pod's own IP are captured inbound (istio-iptables)
    url = a.url or f"http://127.0.0.1:{HEALTH_PORT}/healthz/ready"
    deadline = time.monotonic() + a.timeoutSeconds
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        try:
            with opener.open(url, timeout=2) as r:
                if r.status == 200:
                    print("Envoy is ready", flush=True)
                    return 0
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            print(f"error: timeout waiting for Envoy proxy to become ready ({url})", file=sys.stderr)
            return 1
        time.sleep(a.periodMillis / 1000)


def main(argv: Sequence[str]) -> int:
    """``argv`` starts with one of :data:`SUBCOMMANDS`."""
    env = dict(os.environ)
    cmd, rest = argv[0], list(argv[1:])
    if cmd == "proxy":
        return proxy_main(rest, env)
    if cmd == "wait":
        return wait_main(rest, env)
    from mizzen.agent import iptables

    return iptables.main([*rest, "--apply"])
