"""``python -m mizzen.controlplane`` (the same command as ``mizzen controlplane``): run the control plane
(xDS + HTTP API) until SIGINT/SIGTERM. The options are declared once, in :mod:`mizzen.cli.runtime`.

The API token: ``$MIZZEN_TOKEN`` if set, else ``--token-file`` (default ``<state dir>/token``, or
``$MIZZEN_STATE_DIR/token`` / ``~/.local/state/mizzen/token`` without a state dir), created 0600 at first
start.

``--standby`` makes a warm spare: it imports everything a running control plane needs and compiles the CRD
schemas, then waits for a line on stdin before it reads the state dir and binds its ports (end of input: it
exits). A supervisor (``mizzen demo``) keeps one to replace a control plane that died without paying
Python's start-up.
"""
# ruff: noqa: E402  (grpcenv.configure() runs before the imports that load grpc)

from __future__ import annotations

import asyncio
import importlib
import logging
import sys

from mizzen.controlplane import grpcenv

grpcenv.configure()   # first: gRPC reads its process-wide settings once, when the imports below load it

from mizzen import eventloop, gctune
from mizzen.auth.token import TokenError
from mizzen.config.schema import compile_all
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.kube.client import KubeConfigError
from mizzen.kube.leader import ElectionError
from mizzen.lifecycle import run_until_signal
from mizzen.security.ca import CAError


async def run(opts: ControlPlaneOptions) -> None:
    cp = ControlPlane(opts)
    background: list[asyncio.Task[None]] = []

    async def start() -> None:
        await cp.start()
        gctune.configure()   # this process is the control plane: what startup built is frozen
        cp.ads.on_round = gctune.PushWindow()   # no young pass in the middle of a push round
        background.append(asyncio.create_task(gctune.refreeze_periodically()))

    async def stop() -> None:
        for task in background:
            task.cancel()
        await cp.stop()

    # one parseable line so a parent process can find the (possibly ephemeral) ports
    await run_until_signal(start, stop, lambda: print(
        f"mizzen control plane: xds={cp.xds_address}"
        + (f" xds-tls={cp.xds_tls_address}" if cp.ads.tls_port else "") + f" http={cp.http_url}", flush=True))


def warm_up() -> None:
    """Import what serving needs but the server module imports lazily (validation, translation), and compile
    the CRD schemas, so the first apply after a take-over is as fast as any."""
    for module in ("mizzen.config.loader", "mizzen.config.validation", "mizzen.core.generate",
                   "mizzen.analysis"):
        importlib.import_module(module)
    compile_all()


def serve(opts: ControlPlaneOptions, log_level: str, standby: bool = False) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if standby:
        warm_up()
        if not sys.stdin.readline():
            return                      # not needed any more
        logging.getLogger("mizzen.controlplane").info("standby: taking over")
    try:
        eventloop.run(run(opts))   # uvloop when installed
    except (TokenError, KubeConfigError, CAError, ElectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> None:
    from mizzen.cli.runtime import standalone

    standalone("controlplane", "python -m mizzen.controlplane", argv)


if __name__ == "__main__":
    main()
