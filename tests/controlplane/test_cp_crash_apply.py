"""SIGKILL of the control plane at each step of an apply (and a delete): after a restart, all or none of its
objects are served (issue 8, item 4).

The crash comes from the test-only seam ``MIZZEN_TEST_CRASH_AT=<step>`` (see ``mizzen.controlplane.persist``):
the real ``python -m mizzen.controlplane`` process SIGKILLs itself at that named step of the apply it is
serving over its HTTP API; nothing else is faked. The state before the crash is made, and the state after it
read back, by the store the control plane itself uses at start (one case also restarts the real process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from mizzen.config.loader import load_text
from mizzen.controlplane.persist import CRASH_ENV, CRASH_STEPS
from mizzen.controlplane.store import ConfigStore

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [{name}]
  http:
  - route:
    - destination: {{host: {name}}}
      weight: 100
    timeout: {timeout}s
"""

# steps at which the apply has not reached its commit point yet: nothing of it may survive
BEFORE_COMMIT = ("before-commit", "journal-tmp")


def docs(*names: str, timeout: int = 1) -> dict[str, Any]:
    text = "---\n".join(VS.format(name=n, timeout=timeout) for n in names)
    return {"documents": [{"file": "vs.yaml", "text": text}], "namespace": "bookinfo"}


@asynccontextmanager
async def control_plane(state: Path, crash_at: str | None = None) -> AsyncIterator[tuple[
        asyncio.subprocess.Process, httpx.AsyncClient]]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at is not None:
        env[CRASH_ENV] = crash_at
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mizzen.controlplane", "--state-dir", str(state), "--xds-port", "0",
        "--http-port", "0", "--log-level", "WARNING", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("mizzen control plane:"), line
        token = (state / "token").read_text().strip()
        async with httpx.AsyncClient(base_url=line.split("http=")[1].split()[0].strip(), trust_env=False,
                                     timeout=20, headers={"Authorization": f"Bearer {token}"}) as api:
            yield proc, api
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def prepare(state: Path, *names: str) -> None:
    result = load_text(docs(*names)["documents"][0]["text"], "vs.yaml", "bookinfo")
    store = ConfigStore(state)
    store.apply(result.configs)
    store.close()


def restored(state: Path) -> dict[str, str]:
    """name -> timeout of every VirtualService a restarted control plane's store holds."""
    store = ConfigStore(state)
    assert store.load_problems == []
    return {c.name: c.spec["http"][0]["timeout"] for c in store.list("VirtualService")}


async def served(state: Path) -> dict[str, str]:
    """name -> timeout of every VirtualService a freshly started control plane serves."""
    async with control_plane(state) as (_, api):
        items = (await api.get("/apis/objects", params={"kind": "VirtualService"})).json()["items"]
        problems = (await api.get("/debug/configz")).json()["load_problems"]
        assert problems == []
        return {i["metadata"]["name"]: i["spec"]["http"][0]["timeout"] for i in items}


async def crash_during(state: Path, step: str, path: str, body: dict[str, Any]) -> None:
    async with control_plane(state, crash_at=step) as (proc, api):
        with contextlib.suppress(httpx.HTTPError):   # killed before it answered
            await api.post(path, json=body)
        assert await asyncio.wait_for(proc.wait(), 20) == -signal.SIGKILL, f"no crash at {step}"


@pytest.mark.parametrize("step", CRASH_STEPS)
async def test_sigkill_at_each_step_of_an_apply(tmp_path: Path, step: str) -> None:
    state = tmp_path / "state"
    prepare(state, "reviews")
    # one apply: update reviews (1s -> 2s) and create ratings and details
    await crash_during(state, step, "/apis/apply", docs("reviews", "ratings", "details", timeout=2))
    after = await served(state) if step == "checkpoint-partial" else restored(state)
    if step in BEFORE_COMMIT:
        assert after == {"reviews": "1s"}
    else:
        assert after == {"reviews": "2s", "ratings": "2s", "details": "2s"}
    assert not list((state / "journal").glob("*")), "a replayed or dropped journal record is removed"


@pytest.mark.parametrize("step", ["journal-tmp", "committed", "checkpoint-written"])
async def test_sigkill_at_each_step_of_a_delete(tmp_path: Path, step: str) -> None:
    state = tmp_path / "state"
    prepare(state, "reviews", "ratings", "details")
    await crash_during(state, step, "/apis/delete", docs("reviews", "ratings"))
    after = restored(state)
    assert after == ({"reviews": "1s", "ratings": "1s", "details": "1s"} if step in BEFORE_COMMIT
                     else {"details": "1s"})


async def test_the_journal_record_carries_no_line_maps_and_the_object_files_do(tmp_path: Path) -> None:
    """A journal record leaves out each object's field -> line map (~70 % of a stored object; the record
    of a maximum-size apply is fsynced while later applies wait behind it); the object files keep it. An
    object replayed from a record after a crash is served, with no line map."""
    import json

    state = tmp_path / "state"
    prepare(state, "reviews")
    file = state / "objects" / "VirtualService" / "bookinfo" / "reviews.json"
    assert json.loads(file.read_text())["mizzen"]["lines"]["spec.http[0].route[0].weight"] == 9
    await crash_during(state, "committed", "/apis/apply", docs("ratings", "details", timeout=2))
    [record] = list((state / "journal").glob("*.json"))
    writes = json.loads(record.read_text())["writes"]
    assert [w["metadata"]["name"] for w in writes] == ["ratings", "details"]
    assert all(w["mizzen"]["lines"] == {} and w["mizzen"]["source"]["file"] == "vs.yaml"
               and w["mizzen"]["created"] > 0 for w in writes)
    store = ConfigStore(state)
    assert store.load_problems == []
    got = {c.name: c for c in store.list("VirtualService")}
    assert {n: c.spec["http"][0]["timeout"] for n, c in got.items()} == {
        "reviews": "1s", "ratings": "2s", "details": "2s"}
    assert got["ratings"].lines == {} and got["reviews"].lines["spec.http[0].route[0].weight"] == 9
