"""Envoy's log file is capped: rotated to ``envoy.log.1`` and reopened by Envoy (admin ``/reopen_logs``), so a
proxy that logs a lot (a NACK loop, debug level) never fills the disk (issue 8, item 7). Real Envoy."""

from __future__ import annotations

import asyncio
import time

import pytest

from harness import Mesh, alloc_ip, free_port, mesh  # noqa: F401  (mesh is a fixture)
from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.core.proxy import ProxyType

pytestmark = pytest.mark.e2e

SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: s%d}\nspec: {ports: [{port: 9080, name: http}]}\n"


async def test_envoy_log_is_rotated_at_its_cap(mesh: Mesh) -> None:  # noqa: F811
    cap = 50_000
    ip = alloc_ip()
    spec = ProxySpec(ProxyType.SIDECAR, ip, "default", "chatty", admin_port=free_port(ip),
                     xds_port=mesh.cp.xds_port)
    async with Agent(spec, AgentOptions(log_level="debug", max_log_bytes=cap, log_check_s=0.2)) as agent:
        rotated = agent.log_path.with_name("envoy.log.1")
        deadline = time.monotonic() + 20
        i = 0
        while not rotated.exists():                  # config changes make Envoy log at debug level
            assert time.monotonic() < deadline, agent.log_path.stat().st_size
            i += 1
            await mesh.apply_yaml(SERVICE % i, namespace="default")
            await asyncio.sleep(0.2)
        assert rotated.stat().st_size > cap
        await asyncio.sleep(0.5)                     # the reopen follows the rename
        first = rotated.stat()
        # Envoy reopened its log: it writes to a new envoy.log, and the rotated file no longer grows; the next
        # rotation replaces envoy.log.1, so two files of about the cap are all that is kept
        while rotated.stat().st_ino == first.st_ino:
            assert time.monotonic() < deadline + 20
            assert rotated.stat().st_size == first.st_size
            i += 1
            await mesh.apply_yaml(SERVICE % i, namespace="default")
            await asyncio.sleep(0.2)
        assert len(list(agent.log_path.parent.glob("envoy.log*"))) == 2
