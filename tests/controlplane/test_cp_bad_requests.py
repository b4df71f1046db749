"""Garbage API requests get clear 4xx answers, never a 500 (issue 8, items 2, 6 and 7): deep JSON, invalid
UTF-8, lone surrogates, wrong types, bad namespaces everywhere a namespace enters, workload names with '/',
names long enough to overflow a file name, bodies over 3 MiB or 1,000 objects (413), and a body that is
declared but never sent (cut off)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import Mesh, mesh  # noqa: F401  (mesh is a fixture)
from mizzen.controlplane.parse_worker import MAX_BODY, MAX_OBJECTS
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions

SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\nspec:\n  ports:\n  - port: 9080\n"


def body(text: str, namespace: str | None = "bookinfo") -> dict[str, Any]:
    return {"documents": [{"file": "f.yaml", "text": text}], "namespace": namespace}


JSON = {"content-type": "application/json"}


def error_of(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    data = r.json()
    if "errors" in data:
        return "\n".join(f"{e['file']}:{e['line']}: {e['path'] + ': ' if e['path'] else ''}{e['message']}"
                         for e in data["errors"])
    assert isinstance(data["error"], str) and "\n" not in data["error"]
    return str(data["error"])


async def test_deep_json_and_invalid_utf8_are_400(mesh: Mesh) -> None:  # noqa: F811
    async with mesh.api_client() as api:
        deep = b'{"documents": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        assert "nested too deeply" in error_of(await api.post("/apis/apply", content=deep, headers=JSON), 400)
        bad_utf8 = b'{"documents": [{"file": "f", "text": "\xff\xfe"}]}'
        r = await api.post("/apis/apply", content=bad_utf8, headers=JSON)
        assert "not valid JSON" in error_of(r, 400)
        huge_number = b'{"dry_run": ' + b"1" * 5000 + b"}"
        r = await api.post("/apis/apply", content=huge_number, headers=JSON)
        assert "not valid JSON" in error_of(r, 400)
        for path in ("/apis/delete", "/apis/workloads", "/debug/analyze"):
            assert "nested too deeply" in error_of(await api.post(path, content=deep, headers=JSON), 400)


async def test_bad_documents_are_422_naming_the_problem(mesh: Mesh) -> None:  # noqa: F811
    async with mesh.api_client() as api:
        surrogate = ('{"documents": [{"file": "f.yaml", '
                     '"text": "kind: Service\\nmetadata: {name: \\"\\udc80\\"}"}]}')
        err = error_of(await api.post("/apis/apply", content=surrogate.encode(), headers=JSON), 422)
        assert err == "f.yaml:2: text is not valid UTF-8: lone surrogate U+DC80 at position 32"
        err = error_of(await api.post("/apis/apply", json=body(SERVICE.replace("port: 9080", "port: {a: 1}")
                                                                   .replace("NAME", "x"))), 422)
        assert "spec.ports[0].port: Invalid value: {'a': 1}: port must be an integer" in err
        deep_yaml = "a: " + "[" * 2000 + "]" * 2000
        assert "nesting depth" in error_of(await api.post("/apis/apply", json=body(deep_yaml)), 422)
        assert "control characters" in error_of(
            await api.post("/apis/apply", json=body("kind: Service\x00")), 422)


@pytest.mark.parametrize("namespace", ["..", "a\nb", "bookinfo\n", "A", "a/b", "x" * 64])
async def test_bad_namespaces_are_refused_everywhere(mesh: Mesh, namespace: str) -> None:  # noqa: F811
    async with mesh.api_client() as api:
        for path in ("/apis/apply", "/apis/delete", "/debug/analyze"):
            err = error_of(await api.post(path, json=body(SERVICE.replace("NAME", "x"), namespace)), 400)
            assert err.startswith(f"'namespace': invalid namespace {namespace!r}"), err
        for path in ("/apis/objects", "/debug/analyze"):
            err = error_of(await api.get(path, params={"namespace": namespace}), 400)
            assert err.startswith("query parameter 'namespace': invalid namespace"), err
        w = {"name": "pod-1", "namespace": namespace, "address": "127.0.0.1"}
        err = error_of(await api.post("/apis/workloads", json=w), 400)
        assert "workload namespace: invalid namespace" in err
        assert mesh.cp.store.list() == [] and mesh.cp.registry.workloads() == []


async def test_workload_names_with_a_slash_are_400(mesh: Mesh) -> None:  # noqa: F811
    async with mesh.api_client() as api:
        for name in ("a/b", "..", "Pod", "a" * 254):
            w = {"name": name, "namespace": "bookinfo", "address": "127.0.0.1"}
            err = error_of(await api.post("/apis/workloads", json=w), 400)
            assert err.startswith(f"workload name {name!r} is not a valid Kubernetes name"), err
        err = error_of(await api.delete("/apis/workloads/bookinfo/..%2Fetc"), 400)
        assert "is not a valid Kubernetes name" in err
        assert mesh.cp.registry.workloads() == []


async def test_longest_valid_names_are_stored_and_restored(tmp_path: Path) -> None:
    name = ".".join(["a" * 63] * 3) + "." + "b" * 61                # 253 characters: too long for a file name
    other = name[:-1] + "c"                                           # same readable prefix, another object
    namespace = "n" * 63
    opts = ControlPlaneOptions(state_dir=tmp_path, xds_port=0, http_port=0)
    async with ControlPlane(opts) as cp, httpx.AsyncClient(
            base_url=cp.http_url, trust_env=False, headers={"Authorization": f"Bearer {cp.token}"}) as api:
        texts = [SERVICE.replace("NAME", n) for n in (name, other)]
        r = await api.post("/apis/apply", json={"documents": [{"text": t} for t in texts],
                                                "namespace": namespace})
        assert r.status_code == 200, r.text
        w = {"name": name, "namespace": namespace, "address": "127.0.0.1"}
        assert (await api.post("/apis/workloads", json=w)).status_code == 200
    assert all(len(p.name) <= 255 for p in tmp_path.rglob("*"))
    async with ControlPlane(opts) as cp2:
        assert sorted(c.name for c in cp2.store.list()) == sorted([name, other])
        assert cp2.store.load_problems == []
        assert [w.name for w in cp2.registry.workloads()] == [name]


async def test_body_limits_are_413(mesh: Mesh) -> None:  # noqa: F811
    async with mesh.api_client(timeout=30) as api:
        big = "#" * (MAX_BODY + 10)
        err = error_of(await api.post("/apis/apply", json=body(big)), 413)
        assert err.startswith("request body too large") and "3 MiB" in err

        async def chunks() -> Any:          # no Content-Length: the limit applies while reading
            data = json.dumps(body(big)).encode()
            for i in range(0, len(data), 65536):
                yield data[i:i + 65536]

        assert "too large" in error_of(await api.post("/apis/apply", content=chunks(), headers=JSON), 413)
        many = "---\n".join(SERVICE.replace("NAME", f"s{i}") for i in range(MAX_OBJECTS + 1))
        err = error_of(await api.post("/apis/apply", json=body(many)), 413)
        assert err.startswith(f"too many objects in one request: {MAX_OBJECTS + 1} (at most {MAX_OBJECTS}")
        assert mesh.cp.store.list() == []
        exactly = "---\n".join(SERVICE.replace("NAME", f"s{i}") for i in range(MAX_OBJECTS))
        r = await api.post("/apis/apply", json=body(exactly))
        assert r.status_code == 200 and len(mesh.cp.store.list()) == MAX_OBJECTS


async def raw_request(port: int, head: bytes, payload: bytes) -> tuple[bytes, float]:
    """Send a request head and ``payload``, then read until the server closes; (answer, seconds to close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    try:
        writer.write(head + payload)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 15)     # EOF: the server closed the connection
        return answer, time.monotonic() - t0
    finally:
        writer.close()


async def test_declared_but_missing_body_is_cut_off(tmp_path: Path) -> None:
    opts = ControlPlaneOptions(state_dir=tmp_path, xds_port=0, http_port=0, body_timeout_s=0.5)
    async with ControlPlane(opts) as cp:
        auth = f"Host: 127.0.0.1:{cp.http_port}\r\nAuthorization: Bearer {cp.token}\r\n".encode()
        head = (b"POST /apis/apply HTTP/1.1\r\nContent-Type: application/json\r\n" + auth
                + b"Content-Length: 100000000\r\n\r\n")
        answer, took = await raw_request(cp.http_port, head, b"{")
        assert answer.startswith(b"HTTP/1.1 413 ") and took < 3, (answer[:200], took)
        head = (b"POST /apis/apply HTTP/1.1\r\nContent-Type: application/json\r\n" + auth
                + b"Content-Length: 1000\r\n\r\n")
        answer, took = await raw_request(cp.http_port, head, b"{")
        assert answer.startswith(b"HTTP/1.1 408 ") and b"not received within 0.5s" in answer, answer[:300]
        assert took < 3
