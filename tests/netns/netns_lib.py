"""Pod-like network namespaces for root-only tests: a bridge on the host (like a CNI ``cni0``) with one veth
per pod, a /24 inside 10.244.0.0/16 chosen from the pid, iptables capture applied in a pod's namespace,
processes started inside it (optionally as another user) and killed by pid. Every name starts with
``mzt``; ``PodNet`` removes exactly what it created.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mizzen.agent.bootstrap import ProxySpec
from mizzen.agent.envoy import Agent, AgentOptions
from mizzen.agent.iptables import PROXY_UID

__all__ = ["NetnsAgent", "Pod", "PodNet", "as_user", "netns_unavailable_reason", "run_checked"]

_PR_SET_PDEATHSIG = 1


def netns_unavailable_reason() -> str | None:
    """Why these tests cannot run here (None: they can): root, ``ip``, ``iptables-restore`` and netns."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veths, iptables)"
    for tool in ("ip", "iptables", "iptables-restore", "setpriv", "curl"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install iproute2 iptables util-linux curl)"
    probe = f"mzt-{os.getpid()}-probe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    try:
        r = subprocess.run(["ip", "netns", "exec", probe, "iptables", "-t", "nat", "-S"],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            return f"iptables does not work in a network namespace: {r.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


def run_checked(*argv: str, stdin: str | None = None, timeout: float = 10.0) -> str:
    r = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def as_user(uid: int) -> list[str]:
    """A command prefix running the rest as ``uid`` (gid the same, no supplementary groups), killed with
    its parent."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--pdeathsig=KILL"]


@dataclass(frozen=True)
class Pod:
    name: str
    netns: str
    ip: str
    veth: str            # host end, on the bridge

    def cmd(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this pod's network namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]


class PodNet:
    """``with PodNet() as net: a = net.add_pod("a")``: pods on one bridge, reachable from the host (the
    bridge address ``host_ip``) and from each other. Leaves nothing behind on exit."""

    def __init__(self, work_dir: Path) -> None:
        pid = os.getpid()
        self.tag = f"mzt{pid % 10_000_000}"
        self.subnet = f"10.244.{pid % 200 + 20}"
        self.host_ip = f"{self.subnet}.1"
        self.bridge = f"{self.tag}br"
        self.work_dir = work_dir
        self.pods: list[Pod] = []
        self._procs: list[asyncio.subprocess.Process] = []
        self._bridge_made = False

    def __enter__(self) -> PodNet:
        try:
            run_checked("ip", "link", "add", self.bridge, "type", "bridge")
            self._bridge_made = True
            run_checked("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
            run_checked("ip", "link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_pod(self, name: str) -> Pod:
        idx = len(self.pods)
        pod = Pod(name=name, netns=f"{self.tag.replace('mzt', 'mzt-')}-{name}",
                  ip=f"{self.subnet}.{idx + 2}", veth=f"{self.tag}v{idx}")
        peer = f"{self.tag}p{idx}"
        run_checked("ip", "netns", "add", pod.netns)
        self.pods.append(pod)
        run_checked("ip", "link", "add", pod.veth, "type", "veth", "peer", "name", peer)
        run_checked("ip", "link", "set", peer, "netns", pod.netns)
        run_checked("ip", "link", "set", pod.veth, "master", self.bridge, "up")
        for argv in (["ip", "link", "set", "lo", "up"],
                     ["ip", "link", "set", peer, "name", "eth0"],
                     ["ip", "addr", "add", f"{pod.ip}/24", "dev", "eth0"],
                     ["ip", "link", "set", "eth0", "up"],
                     ["ip", "route", "add", "default", "via", self.host_ip]):
            run_checked(*pod.cmd(argv))
        return pod

    def apply_iptables(self, pod: Pod, restore_text: str) -> None:
        """Feed ``iptables-restore --noflush`` in the pod."""
        run_checked(*pod.cmd(["iptables-restore", "--noflush"]), stdin=restore_text)

    def nat_rules(self, pod: Pod) -> str:
        """The pod's nat table as ``iptables -t nat -S`` prints it."""
        return run_checked(*pod.cmd(["iptables", "-t", "nat", "-S"]))

    async def start(self, pod: Pod, argv: Sequence[str], log: Path,
                    preexec: Callable[[], None] | None = _die_with_parent) -> asyncio.subprocess.Process:
        """A long-running process in the pod (stdout+stderr to ``log``), killed by pid on close."""
        with open(log, "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *pod.cmd(argv), stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, preexec_fn=preexec)
        self._procs.append(proc)
        return proc

    async def run(self, pod: Pod, argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str]:
        """Run ``argv`` in the pod to completion (bounded); returns (exit code, stdout)."""
        proc = await asyncio.create_subprocess_exec(
            *pod.cmd(argv), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_parent)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace")

    async def stop_processes(self, timeout: float = 5.0) -> None:
        """Kill (by pid) and reap every process :meth:`start` started."""
        for proc in self._procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), timeout)
        self._procs.clear()

    def close(self) -> None:
        """Delete the namespaces, veths and bridge (by their names); call :meth:`stop_processes` first."""
        for proc in self._procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        for pod in self.pods:
            # deleting the namespace kills its eth0, and with it the host end of the veth pair
            subprocess.run(["ip", "netns", "del", pod.netns], capture_output=True, timeout=10)
            if Path(f"/sys/class/net/{pod.veth}").exists():
                subprocess.run(["ip", "link", "del", pod.veth], capture_output=True, timeout=10)
        self.pods.clear()
        if self._bridge_made:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=10)
            self._bridge_made = False


class NetnsAgent(Agent):
    """The real agent (bootstrap, supervision, readiness on the pod-IP admin), its Envoy run inside the pod's
    namespace as the proxy user (uid/gid 1337), like the istio-proxy container. ``options.work_dir`` must be
    readable by that user."""

    def __init__(self, spec: ProxySpec, pod: Pod, options: AgentOptions) -> None:
        super().__init__(spec, options)
        self.pod = pod

    def command(self) -> list[str]:
        return self.pod.cmd([*as_user(PROXY_UID), *super().command()])
