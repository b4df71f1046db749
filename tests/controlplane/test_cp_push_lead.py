"""An isolated change is pushed on the event loop's next turn, with the control plane's default debounce:
the API's apply (``store.apply_async``, the journal record written on the journal thread) goes live, and
the push starts without the loop sleeping on a timer first (a sleeping loop hands the CPUs to the proxies and
waits for one to wake up: bench/README.md). A change right after a push is still debounced (a burst
coalesces). No proxies, no timings judged: turns of the loop are counted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mizzen.config.loader import load_text
from mizzen.config.model import Config
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: bookinfo}}
spec:
  hosts: [reviews]
  http:
  - route:
    - {{destination: {{host: reviews, subset: v1}}, weight: {w}}}
    - {{destination: {{host: reviews, subset: v2}}, weight: {rest}}}
"""


def change(w: int) -> list[Config]:
    result = load_text(VS.format(w=w, rest=100 - w), "vs.yaml")
    assert not result.errors, result.errors
    return list(result.configs)


async def turns_until_pushed(cp: ControlPlane, pushes: int, most: int = 3) -> int | None:
    """Turns of the loop (``sleep(0)``) until the push count passes ``pushes`` (None: not within ``most``)."""
    for turn in range(1, most + 1):
        await asyncio.sleep(0)
        if cp.pusher.stats.pushes > pushes:
            return turn
    return None


async def test_an_isolated_apply_is_pushed_on_the_next_turn_and_a_burst_still_waits(tmp_path: Path) -> None:
    options = ControlPlaneOptions(state_dir=tmp_path / "state", xds_port=0, http_port=None)
    cp = ControlPlane(options)
    await cp.start()
    try:
        await cp.store.apply_async(change(10))
        await cp.flush()
        await asyncio.sleep(options.debounce_quiet_s * 1.5)   # quiet: the next change is isolated
        pushes = cp.pusher.stats.pushes
        await cp.store.apply_async(change(20))   # returns once the journal record is durable and it is live
        assert await turns_until_pushed(cp, pushes) is not None, "the push waited for a timer"
        assert cp.pusher.stats.reasons == ["config VirtualService/bookinfo/reviews configured"]
        # right after that push, a change is debounced as before (100 ms quiet): no push on the next turns
        pushes = cp.pusher.stats.pushes
        await cp.store.apply_async(change(30))
        assert await turns_until_pushed(cp, pushes) is None
        await cp.flush()
        assert cp.pusher.stats.pushes == pushes + 1
    finally:
        await cp.stop()
