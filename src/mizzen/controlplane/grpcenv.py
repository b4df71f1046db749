"""gRPC's process-wide runtime settings for the control plane: environment variables gRPC reads once, when
the grpc module loads, so they are set here before anything imports it (``python -m mizzen.controlplane``
and ``mizzen controlplane`` call :func:`configure` first). Channel-level settings live with the server they
tune (``mizzen.xds.server.serve``).

The one setting: gRPC's iomgr TCP endpoints (epoll1) instead of its EventEngine ones. With EventEngine, the
ADS streams' ACKs are read on EventEngine threads that hand every completion over with a futex wake; with
iomgr they are read by the thread that already waits on the completion queue (grpc.aio's poller), several
at a time. Measured with ``bench/bench_xds_streams.py`` (bench/README.md, "gRPC runtime settings"): ~40 %
fewer syscalls per response, ~4-5 % fewer instructions per stream and round in the server process (all
threads; the event loop's thread's unchanged) and, at low load, ~15-25 % less server CPU per 5,000-stream
push round. An operator's own ``GRPC_EXPERIMENTS`` wins (not merged).
"""

from __future__ import annotations

import os
import sys

EXPERIMENTS_ENV = "GRPC_EXPERIMENTS"
#: gRPC experiments (default-on in grpcio 1.85) turned off for the control plane: TCP servers and accepted
#: connections use iomgr's endpoints. Client channels (``event_engine_client``) keep EventEngine.
SERVER_EXPERIMENTS = "-event_engine_listener,-event_engine_for_all_other_endpoints"


def configure() -> bool:
    """Put the settings into this process's environment unless it has its own; False (nothing set) when
    grpc is already loaded, because gRPC would not see them any more."""
    if "grpc" in sys.modules:
        return False
    os.environ.setdefault(EXPERIMENTS_ENV, SERVER_EXPERIMENTS)
    return True
