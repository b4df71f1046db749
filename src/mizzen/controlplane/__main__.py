"""``python -m mizzen.controlplane`` (the same command as ``mizzen controlplane``): run the control plane
(xDS + HTTP API) until SIGINT/SIGTERM. The options are declared once, in :mod:`mizzen.cli.runtime`."""

from __future__ import annotations

import asyncio
import logging

from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.lifecycle import run_until_signal


async def run(opts: ControlPlaneOptions) -> None:
    cp = ControlPlane(opts)
    # one parseable line so a parent process can find the (possibly ephemeral) ports
    await run_until_signal(cp.start, cp.stop, lambda: print(
        f"mizzen control plane: xds={cp.xds_address} http={cp.http_url}", flush=True))


def serve(opts: ControlPlaneOptions, log_level: str) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(opts))


def main(argv: list[str] | None = None) -> None:
    from mizzen.cli.runtime import standalone

    standalone("controlplane", "python -m mizzen.controlplane", argv)


if __name__ == "__main__":
    main()
