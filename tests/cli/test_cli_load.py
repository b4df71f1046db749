"""``mizzen load`` without a mesh: what it says when it cannot send (defect 4), ``-n`` being the namespace,
and a plain run against a local server (the 503 causes through a real sidecar are in tests/e2e)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiohttp import web
from cli_helpers import LoopThread, run_cli, start_site


@pytest.fixture
def local_server() -> Iterator[str]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    lt = LoopThread()
    runner, url = lt.call(start_site(app, "127.0.91.6"))
    try:
        yield url
    finally:
        lt.call(runner.cleanup())
        lt.close()


def test_mesh_name_without_from_says_why_and_fails() -> None:
    """Defect 4: this printed ``Code 0 : 1 (100.0 %)`` and exited 0."""
    proc = run_cli("load", "http://ratings:9080/ratings/0")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == ('error: cannot resolve "ratings" from this machine: mesh service names resolve '
                           "only inside the mesh; add --from POD (e.g. --from productpage) to send through "
                           "that workload's sidecar\n")


def test_nothing_answering_is_code_minus_one_and_exit_1() -> None:
    proc = run_cli("load", "-N", "2", "http://127.0.91.7:9/")
    assert proc.returncode == 1
    assert proc.stdout.startswith("Code -1 : 2 (100.0 %) [ConnectError"), proc.stdout
    assert proc.stderr.startswith("error: no request got an HTTP response (ConnectError")


def test_n_is_the_namespace_and_a_count_there_gets_a_hint() -> None:
    proc = run_cli("load", "-c", "2", "-n", "20", "http://ratings:9080/ratings/0", "--from", "productpage")
    assert proc.returncode == 1
    assert proc.stderr == "error: -n is the namespace (as in kubectl); for fortio's request count use -N 20\n"
    proc = run_cli("load", "ftp://x/")
    assert proc.returncode == 1 and proc.stderr == "error: 'ftp://x/' is not an http:// URL " \
        "(e.g. http://ratings:9080/ratings/0)\n"


def test_load_against_a_reachable_server(local_server: str) -> None:
    proc = run_cli("load", "-c", "2", "--requests", "6", local_server + "/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "Code 200 : 6 (100.0 %)"
