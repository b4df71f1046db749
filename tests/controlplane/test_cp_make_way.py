"""A large apply's background work on the event loop (the rebuild of the worker's answer, the staging) makes
way for pushes: between its slices it waits for a running push to end (``Pusher.make_way``), so an
unrelated change is not pushed in turns with it. The order of events is judged, not timings."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from mizzen.config.loader import load_text
from mizzen.config.model import ConfigSnapshot
from mizzen.controlplane import push as push_module
from mizzen.controlplane.parse_worker import load_prepared, unpack
from mizzen.controlplane.push import Pusher
from mizzen.controlplane.store import ConfigStore
from mizzen.core.mesh import MeshConfig
from mizzen.core.proxy import Meta, Proxy, ProxyType, node_id
from mizzen.core.push_context import PushContext
from mizzen.registry.registry import Registry
from mizzen.xds.cache import SnapshotCache
from mizzen.xds.resources import ResourceSet

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bulk-{i}, namespace: bulk}}
spec:
  hosts: [bulk-{i}.bulk.svc.cluster.local]
  exportTo: ["."]
  http:
  - route: [{{destination: {{host: bulk-{i}.bulk.svc.cluster.local}}}}]
"""

PROXIES = 5 * push_module.YIELD_EVERY   # the push yields to the loop at least four times while generating


def world(log: list[str]) -> Pusher:
    def generator(proxy: Proxy, _push: PushContext, _types: Collection[str] | None) -> ResourceSet:
        log.append(f"generated {proxy.id}")
        return ResourceSet({})

    pusher = Pusher(SnapshotCache(), lambda: ConfigSnapshot.of(()), Registry().snapshot, MeshConfig(),
                    generator)
    for i in range(PROXIES):
        name = f"app-{i}"
        pusher.connect(node_id(ProxyType.SIDECAR, f"10.9.{1 + i // 200}.{1 + i % 200}", name, "default"),
                       {Meta.NAMESPACE: "default", Meta.WORKLOAD_NAME: name})
    log.clear()
    return pusher


async def test_make_way_waits_for_the_running_push_to_end() -> None:
    log: list[str] = []
    pusher = world(log)

    async def background() -> None:
        await pusher.make_way()
        log.append("slice")

    push = asyncio.create_task(pusher.push(None))
    await asyncio.sleep(0)   # the push started: it yields after its first batch of proxies
    assert pusher.pushing
    await asyncio.gather(push, background())
    assert log.index("slice") == len(log) - 1 == PROXIES   # after every proxy's generation

    # with no push running it is a plain yield
    log.clear()
    await background()
    assert log == ["slice"] and not pusher.pushing


async def test_a_plain_yield_would_interleave_with_the_push() -> None:
    """The control for the test above: without make_way the slice runs in the middle of the push."""
    log: list[str] = []
    pusher = world(log)

    async def background() -> None:
        await asyncio.sleep(0)
        log.append("slice")

    push = asyncio.create_task(pusher.push(None))
    await asyncio.sleep(0)
    await asyncio.gather(push, background())
    assert 0 < log.index("slice") < PROXIES


async def test_staging_and_the_rebuild_pause_through_the_given_function() -> None:
    """apply_async and the rebuild of the worker's answer call their ``pause`` between slices (the control
    plane gives them Pusher.make_way); the result is the same as without pauses."""
    text = "---\n".join(VS.format(i=i) for i in range(40))
    pauses: list[str] = []

    async def rebuild_pause() -> None:
        pauses.append("rebuild")
        await asyncio.sleep(0)

    prepared = load_prepared([(text, "bulk.yaml")], None, 100)
    loaded = await unpack(prepared, slice_s=0.0, pause=rebuild_pause)
    assert pauses.count("rebuild") >= 39 and len(loaded.configs) == 40

    store = ConfigStore(stage_slice_s=0.0)

    async def stage_pause() -> None:
        pauses.append("stage")
        await asyncio.sleep(0)

    store.pause = stage_pause
    results = await store.apply_async(loaded.configs, issues=list(loaded.warnings))
    assert pauses.count("stage") >= 1
    assert [r.action for r in results] == ["created"] * 40 and len(store) == 40
    assert load_text(text, "bulk.yaml").configs == [store.get("VirtualService", "bulk", f"bulk-{i}")
                                                     for i in range(40)]
