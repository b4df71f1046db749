"""``kubectl logs`` through the real API server to the node agent's kubelet API (tools/kube/kubelet_api.py):
the API server dials the node's InternalIP at the port the Node announces, verifies the node's certificate
(the cluster CA's) and presents its kubelet client certificate; ``--tail``, ``-f`` (new output streamed),
``--previous`` refused in one line, an unknown container refused; the kubelet port refuses a client
certificate that is not the API server's (403) and a client with none (TLS handshake refused)."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kube_harness import UNAVAILABLE, nodeagent, wait_for

pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")

NS = "kubeletlogs"
# prints a numbered line every 0.2 s (to stdout and, every 5th, to stderr), flushing each
TALKER = ("import sys, time\n"
          "for i in range(100000):\n"
          "    print(f'line {i}', flush=True)\n"
          "    if i % 5 == 0: print(f'err {i}', file=sys.stderr, flush=True)\n"
          "    time.sleep(0.2)\n")


@pytest.fixture
def node(kube_cluster: Any) -> Iterator[Any]:
    agent = nodeagent.NodeAgent(kube_cluster, "mizzen-node-0", lease_renew_s=1.0)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


def kubectl(cluster: Any, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(cluster.bin / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_kubectl_logs_reaches_the_node_agent(kube_cluster: Any, node: Any) -> None:
    c = kube_cluster
    c.kubectl("create", "namespace", NS)
    try:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "talker", "namespace": NS},
               "spec": {"terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "talk", "image": "example/talk",
                                        "command": [sys.executable, "-c", TALKER]}]}}
        c.kubectl("apply", "-f", "-", stdin=json.dumps(pod))

        def running() -> bool:
            r = kubectl(c, "get", "pod", "-n", NS, "talker", "-o", "jsonpath={.status.phase}")
            return r.stdout == "Running"

        wait_for(running, timeout=60, what="the talker pod Running")
        node_obj = json.loads(c.kubectl("get", "node", node.name, "-o", "json"))
        port = node_obj["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        assert port == node.kubelet_port and port > 0

        def has(n: int) -> str:
            r = kubectl(c, "logs", "-n", NS, "talker")
            return r.stdout if r.returncode == 0 and f"line {n}\n" in r.stdout else ""

        out = wait_for(lambda: has(5), timeout=30, what="5 lines in kubectl logs")
        assert out.startswith("line 0\nerr 0\nline 1\n"), out[:200]      # stdout and stderr, in order
        r = kubectl(c, "logs", "-n", NS, "talker", "-c", "talk", "--tail", "2")
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stdout + r.stderr
        last = int(r.stdout.splitlines()[-1].split()[-1])

        # -f: what was there, then new lines as they are written
        t0 = time.monotonic()
        follow = subprocess.Popen([str(c.bin / "kubectl"), "--kubeconfig", str(c.kubeconfig), "logs", "-f",
                                   "-n", NS, "talker", "--tail", "1"], stdout=subprocess.PIPE, text=True)
        try:
            assert follow.stdout is not None
            seen: list[str] = []
            while time.monotonic() - t0 < 20:
                seen.append(follow.stdout.readline().strip())
                numbers = [int(s.split()[-1]) for s in seen if s.startswith("line ")]
                if numbers and max(numbers) >= last + 5:
                    break
            assert numbers and max(numbers) >= last + 5, seen
        finally:
            follow.kill()
            follow.wait(timeout=10)
            if follow.stdout is not None:
                follow.stdout.close()

        r = kubectl(c, "logs", "-n", NS, "talker", "--previous")
        assert r.returncode != 0 and 'previous terminated container "talk" in pod "talker" not found' \
            in r.stderr, r.stderr
        r = kubectl(c, "logs", "-n", NS, "talker", "-c", "nope")
        assert r.returncode != 0 and "container nope is not valid for pod talker" in r.stderr, r.stderr

        # the kubelet port itself: the admin's certificate (the cluster CA's, not the API server's) gets a
        # 403; no client certificate, no TLS session
        pki = c.pki.root
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        with socket.create_connection((node.host_ip, port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=node.host_ip) as tls:
            tls.sendall(f"GET /containerLogs/{NS}/talker/talk HTTP/1.1\r\nHost: x\r\n"
                        "Connection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
        assert b"line 0" not in answer
        bare = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        got = b""
        try:
            with socket.create_connection((node.host_ip, port), timeout=10) as raw, \
                    bare.wrap_socket(raw, server_hostname=node.host_ip) as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while chunk := tls.recv(65536):
                    got += chunk
        except (ssl.SSLError, ConnectionResetError):   # TLS 1.3: the alert arrives at the first read
            pass
        assert got == b"", f"served without a client certificate: {got[:100]!r}"
    finally:
        c.kubectl("delete", "namespace", NS, "--wait=false")


def test_lines_after_offsets() -> None:
    """``mizzen logs [-f]`` over pods/log: whole lines, the tail, and what follows an offset (from the start
    again when the log got shorter: a restarted or rotated log)."""
    from mizzen.kube.pods_view import lines_after

    data = b"a\nbb\nccc\npartial"
    assert lines_after(data, None, None) == {"lines": ["a", "bb", "ccc"], "offsets": [9]}
    assert lines_after(data, 2, None) == {"lines": ["bb", "ccc"], "offsets": [9]}
    assert lines_after(data, 0, None)["lines"] == []
    assert lines_after(data + b"!\n", None, 9) == {"lines": ["partial!"], "offsets": [18]}
    assert lines_after(b"new\n", None, 9) == {"lines": ["new"], "offsets": [4]}
