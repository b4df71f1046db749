"""``python -m mizzen.controlplane``: run the control plane (xDS + HTTP API) until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from mizzen.controlplane.server import DEFAULT_HTTP_PORT, DEFAULT_XDS_PORT, ControlPlane, ControlPlaneOptions
from mizzen.lifecycle import run_until_signal


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mizzen.controlplane", description=__doc__)
    p.add_argument("--state-dir", type=Path, default=None, help="persist applied objects here")
    p.add_argument("--xds-host", default="127.0.0.1")
    p.add_argument("--xds-port", type=int, default=DEFAULT_XDS_PORT, help="0 = any free port")
    p.add_argument("--http-host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="0 = any free port")
    p.add_argument("--debounce-quiet", type=float, default=0.1, help="seconds")
    p.add_argument("--debounce-max", type=float, default=1.0, help="seconds")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    opts = ControlPlaneOptions(
        state_dir=args.state_dir, xds_host=args.xds_host, xds_port=args.xds_port,
        http_host=args.http_host, http_port=args.http_port,
        debounce_quiet_s=args.debounce_quiet, debounce_max_s=args.debounce_max,
    )
    cp = ControlPlane(opts)
    # one parseable line so a parent process can find the (possibly ephemeral) ports
    await run_until_signal(cp.start, cp.stop, lambda: print(
        f"mizzen control plane: xds={cp.xds_address} http={cp.http_url}", flush=True))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
