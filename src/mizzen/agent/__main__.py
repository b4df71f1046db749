"""``python -m mizzen.agent``: run one agent (bootstrap + supervised Envoy) standalone until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.envoy import Agent, AgentEvent, AgentOptions
from mizzen.core.proxy import ProxyType
from mizzen.lifecycle import run_until_signal


def parse_labels(text: str) -> dict[str, str]:
    """``app=reviews,version=v1`` -> {"app": "reviews", "version": "v1"}."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise argparse.ArgumentTypeError(f"label {item!r}: want key=value")
        out[k.strip()] = v.strip()
    return out


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: want host:port")
    return host or "127.0.0.1", int(port)


def parse_gateway_ports(text: str) -> dict[int, int]:
    """``80=8080,443=8443`` -> {80: 8080, 443: 8443}."""
    try:
        return {int(a): int(b) for a, b in (p.split("=", 1) for p in text.split(",") if p)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want port=listen_port,...") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mizzen.agent", description=__doc__)
    p.add_argument("--type", choices=[t.value for t in ProxyType], default="sidecar")
    p.add_argument("--ip", required=True, help="the workload's (loopback) address")
    p.add_argument("--namespace", default="default")
    p.add_argument("--name", default=None, help="workload (pod) name; default: derived from labels")
    p.add_argument("--labels", type=parse_labels, default={})
    p.add_argument("--service-account", default="default")
    p.add_argument("--xds", type=parse_hostport, default=("127.0.0.1", 15010), help="control plane host:port")
    p.add_argument("--admin-port", type=int, default=15000)
    p.add_argument("--app-host", default="127.0.0.1")
    p.add_argument("--http-proxy-port", type=int, default=None, help="sidecar outbound proxy port (15080)")
    p.add_argument("--gateway-ports", type=parse_gateway_ports, default=None, help="80=8080,443=8443")
    p.add_argument("--locality", default="")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--envoy-log-level", default="warning")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def spec_from_args(args: argparse.Namespace) -> ProxySpec:
    labels: dict[str, str] = args.labels
    name = args.name or labels.get("app") or labels.get("istio") or "proxy"
    return ProxySpec(
        type=ProxyType(args.type), ip=args.ip, namespace=args.namespace, name=name,
        admin_port=args.admin_port,
        xds_host=args.xds[0], xds_port=args.xds[1], labels=labels, service_account=args.service_account,
        app_host=args.app_host, http_proxy_port=args.http_proxy_port, gateway_ports=args.gateway_ports,
        locality=args.locality,
    )


async def run(args: argparse.Namespace) -> None:
    spec = spec_from_args(args)
    opts = AgentOptions(log_level=args.envoy_log_level, concurrency=args.concurrency, work_dir=args.work_dir)

    def report(ev: AgentEvent) -> None:
        line = {"event": ev.kind, "node": ev.node_id, "rc": ev.returncode, "restarts": ev.restarts}
        print(json.dumps(line), flush=True)

    agent = Agent(spec, opts, on_event=report)
    def announce() -> None:
        print(f"mizzen agent: node={agent.node_id} admin={agent.admin_url} pid={agent.pid}", flush=True)

    await run_until_signal(lambda: agent.start(ready_timeout=None), agent.stop, announce)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
