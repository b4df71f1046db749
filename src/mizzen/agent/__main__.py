"""``python -m mizzen.agent`` (the same command as ``mizzen agent``): run one agent (bootstrap + supervised
Envoy) standalone until SIGTERM. The options are declared once, in :mod:`mizzen.cli.runtime`; this module
parses their structured values and runs the agent.

With ``--proxyless`` there is no Envoy: the agent serves its xDS proxy socket and writes the gRPC xDS
bootstrap for a proxyless gRPC application (point ``GRPC_XDS_BOOTSTRAP`` at it), like Istio's agent does."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.envoy import Agent, AgentEvent, AgentOptions
from mizzen.agent.grpc_bootstrap import write_grpc_bootstrap
from mizzen.agent.identity import IdentityError, IdentityOptions, load_credential
from mizzen.agent.xds_proxy import XdsProxy
from mizzen.lifecycle import run_until_signal
from mizzen.security.nodeagent.upstream import ControlPlaneTls


def parse_labels(text: str) -> dict[str, str]:
    """``app=reviews,version=v1`` -> {"app": "reviews", "version": "v1"}."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ValueError(f"label {item!r}: want key=value")
        out[k.strip()] = v.strip()
    return out


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{text!r}: want host:port")
    return host or "127.0.0.1", int(port)


def parse_gateway_ports(text: str) -> dict[int, int]:
    """``80=8080,443=8443`` -> {80: 8080, 443: 8443}."""
    try:
        return {int(a): int(b) for a, b in (p.split("=", 1) for p in text.split(",") if p)}
    except ValueError:
        raise ValueError(f"{text!r}: want port=listen_port,...") from None


async def run(spec: ProxySpec, opts: AgentOptions) -> None:
    def report(ev: AgentEvent) -> None:
        line = {"event": ev.kind, "node": ev.node_id, "rc": ev.returncode, "restarts": ev.restarts}
        print(json.dumps(line), flush=True)

    agent = Agent(spec, opts, on_event=report)

    def announce() -> None:
        proxy = agent.admin_proxy_url or "off (no API token found)"
        print(f"mizzen agent: node={agent.node_id} admin={agent.admin_socket} admin-proxy={proxy} "
              f"pid={agent.pid}", flush=True)

    await run_until_signal(lambda: agent.start(ready_timeout=None), agent.stop, announce)


async def run_proxyless(spec: ProxySpec, xds_socket: Path, bootstrap: Path,
                        identity: IdentityOptions | None = None) -> None:
    """With ``identity`` the xDS proxy forwards over the control plane's TLS port with the pod credential
    (read from its 0600 file next to the socket unless given), like a sidecar's agent."""
    tls = None
    if identity is not None:
        credential, roots = load_credential(identity, xds_socket.resolve().parent)
        tls = ControlPlaneTls(identity.ca_address, roots, credential, identity.server_name)
    proxy = XdsProxy(xds_socket, identity.ca_address if identity else f"{spec.xds_host}:{spec.xds_port}",
                     tls=tls)

    async def start() -> None:
        await proxy.start()
        write_grpc_bootstrap(bootstrap, spec, proxy.server_uri)

    def announce() -> None:
        print(f"mizzen agent (proxyless): node={spec.node_id} xds={proxy.server_uri} "
              f"GRPC_XDS_BOOTSTRAP={bootstrap.resolve()}", flush=True)

    await run_until_signal(start, proxy.stop, announce)


def serve_proxyless(spec: ProxySpec, xds_socket: Path, bootstrap: Path, log_level: str,
                    identity: IdentityOptions | None = None) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run_proxyless(spec, xds_socket, bootstrap, identity))
    except IdentityError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def serve(spec: ProxySpec, opts: AgentOptions, log_level: str) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run(spec, opts))
    except IdentityError as e:          # a missing or loose credential file, ...: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> None:
    """pilot-agent's subcommands (``proxy``, ``istio-iptables``, ``wait``: :mod:`mizzen.agent.pilot`), else
    the ``mizzen agent`` options."""
    args = sys.argv[1:] if argv is None else argv
    from mizzen.agent import pilot

    if args and args[0] in pilot.SUBCOMMANDS:
        raise SystemExit(pilot.main(args))
    from mizzen.cli.runtime import standalone

    standalone("agent", "python -m mizzen.agent", argv)


if __name__ == "__main__":
    main()
