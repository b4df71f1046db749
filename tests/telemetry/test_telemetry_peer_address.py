"""TCP source labels from the peer's address and mTLS identity (:mod:`mizzen.telemetry.peer_address`): the
agent-side expansion's trust rule (the address's workload only when its namespace and service account are
the peer principal's; the namespace from the principal as Istio's stats plugin; plaintext ``unknown``;
ambiguous loopback addresses ``unknown``), the tag dropped and alike series added up, the bounded cache; and
the control plane's lookup over real gRPC: anonymous on a plaintext-only control plane, authenticated on the
TLS port, refused in plaintext once the control plane has a mesh identity. The end-to-end case with real
Envoys is ``tests/netns/test_netns_telemetry_tcp.py``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
import pytest
from telemetry_kit import parse

from harness import free_port
from mizzen.controlplane.server import ControlPlane, ControlPlaneOptions
from mizzen.core.workload_labels import peer_labels
from mizzen.registry.model import Workload
from mizzen.security.nodeagent.upstream import ControlPlaneTls
from mizzen.telemetry.peer_address import (
    ADDRESS_TAG,
    LOOKUP_METHOD,
    MAX_ADDRESSES,
    AddressMap,
    PeerEntry,
    decode_answer,
    encode_request,
    expand,
    grpc_fetch,
)

NS = "shop"
SLEEP = "spiffe://cluster.local/ns/shop/sa/sleep"


def entry(pod: str, sa: str, labels: Mapping[str, str], namespace: str = NS) -> PeerEntry:
    return PeerEntry(namespace, sa, tuple(peer_labels(pod, namespace, labels).fields().items()))


SLEEP_V1 = entry("sleep-v1-5d8f7c6b9d-q2w3e", "sleep", {"app": "sleep", "version": "v1"})
SLEEP_V2 = entry("sleep-v2-5d8f7c6b9d-a1b2c", "sleep", {"app": "sleep", "version": "v2"})
OTHER = entry("curl-6c5b4a3b2c-zz9yy", "curl", {"app": "curl"})
UNKNOWN_SOURCE = {"source_workload": "unknown", "source_canonical_service": "unknown",
                  "source_canonical_revision": "unknown", "source_workload_namespace": "unknown",
                  "source_app": "unknown", "source_version": "unknown", "source_cluster": "unknown"}


def line(address: str, principal: str, value: int, policy: str = "mutual_tls",
         name: str = "istio_tcp_connections_opened_total") -> str:
    labels = {"reporter": "destination", **UNKNOWN_SOURCE, "source_principal": principal,
              "destination_workload": "tcp-echo-v1", "connection_security_policy": policy,
              ADDRESS_TAG: address}
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" + f" {value}"


def one(text: str) -> dict[str, str]:
    [(_, labels, _)] = parse(text)
    return labels


def test_the_address_workload_is_used_only_with_a_matching_principal() -> None:
    got = one(expand(line("10.244.0.2", SLEEP, 1), {"10.244.0.2": [SLEEP_V1]}))
    assert ADDRESS_TAG not in got
    assert {k: got[k] for k in UNKNOWN_SOURCE} == {
        "source_workload": "sleep-v1", "source_canonical_service": "sleep", "source_canonical_revision": "v1",
        "source_workload_namespace": NS, "source_app": "sleep", "source_version": "v1",
        "source_cluster": "Kubernetes"}
    assert got["source_principal"] == SLEEP and got["destination_workload"] == "tcp-echo-v1"
    # another identity at that address (a spoofed or reused address): only the principal's namespace
    spoofed = one(expand(line("10.244.0.2", "spiffe://cluster.local/ns/other/sa/sleep", 1),
                         {"10.244.0.2": [SLEEP_V1]}))
    assert spoofed["source_workload_namespace"] == "other"
    assert {k: v for k, v in spoofed.items() if k in UNKNOWN_SOURCE and k != "source_workload_namespace"} == {
        k: "unknown" for k in UNKNOWN_SOURCE if k != "source_workload_namespace"}
    # a principal without a map entry: the namespace from the SAN, as Istio's stats plugin
    alone = one(expand(line("10.244.0.9", SLEEP, 1), {}))
    assert alone["source_workload_namespace"] == NS and alone["source_workload"] == "unknown"


def test_plaintext_stays_unknown_even_at_a_known_address() -> None:
    got = one(expand(line("10.244.0.2", "unknown", 3, policy="none"), {"10.244.0.2": [SLEEP_V1]}))
    assert {k: got[k] for k in UNKNOWN_SOURCE} == UNKNOWN_SOURCE and ADDRESS_TAG not in got


def test_a_shared_address_is_ambiguous_unless_one_workload_has_the_identity() -> None:
    # loopback mode: every pod is 127.0.0.1; the principal picks the one workload with its account
    shared = {"127.0.0.1": [SLEEP_V1, OTHER]}
    assert one(expand(line("127.0.0.1", SLEEP, 1), shared))["source_workload"] == "sleep-v1"
    # two workloads share address and identity but differ: unknown, not a guess
    both = one(expand(line("127.0.0.1", SLEEP, 1), {"127.0.0.1": [SLEEP_V1, SLEEP_V2]}))
    assert both["source_workload"] == "unknown" and both["source_workload_namespace"] == NS


def test_series_that_expand_alike_are_added_up_and_others_kept() -> None:
    text = "\n".join([
        "# TYPE istio_tcp_connections_opened_total counter",
        line("10.244.0.2", SLEEP, 2), line("10.244.0.3", SLEEP, 5),      # two pods of sleep-v1
        line("10.244.0.4", "unknown", 1, policy="none"), line("10.244.0.5", "unknown", 4, policy="none"),
        'envoy_cluster_upstream_cx_total{envoy_cluster_name="x"} 7', ""])
    workloads = {"10.244.0.2": [SLEEP_V1], "10.244.0.3": [SLEEP_V1]}
    out = expand(text, workloads)
    samples = parse(out)
    assert [(labels["source_workload"], v) for n, labels, v in samples if n.startswith("istio_tcp")] == [
        ("sleep-v1", 7.0), ("unknown", 5.0)]
    assert ADDRESS_TAG not in out and out.startswith("# TYPE") and 'envoy_cluster_name="x"} 7' in out
    # a Telemetry that removed source_app: it stays removed
    removed = line("10.244.0.2", SLEEP, 1).replace('source_app="unknown",', "")
    assert "source_app" not in one(expand(removed, workloads))


async def test_the_cache_asks_once_per_miss_and_again_after_its_ttl() -> None:
    asked: list[list[str]] = []
    now = [0.0]

    async def fetch(addresses: Sequence[str]) -> Mapping[str, Sequence[PeerEntry]]:
        asked.append(list(addresses))
        return {"10.244.0.2": [SLEEP_V1]}

    peers = AddressMap(fetch, ttl_s=30, negative_ttl_s=5, clock=lambda: now[0])
    text = "\n".join([line("10.244.0.2", SLEEP, 1), line("10.244.0.7", SLEEP, 1),
                      line("10.244.0.8", "unknown", 1, policy="none")])
    assert one(await peers.expand(line("10.244.0.2", SLEEP, 1)))["source_workload"] == "sleep-v1"
    await peers.expand(text)
    # a plaintext peer's address is never asked for; a known address is cached
    assert asked == [["10.244.0.2"], ["10.244.0.7"]]
    now[0] = 4.0
    await peers.expand(text)
    assert len(asked) == 2
    now[0] = 6.0                                   # the unknown address again, the known one still cached
    await peers.expand(text)
    assert asked[-1] == ["10.244.0.7"]
    now[0] = 40.0
    await peers.expand(text)
    assert asked[-1] == ["10.244.0.2", "10.244.0.7"]
    many = "\n".join(line(f"10.244.1.{i}", SLEEP, 1) for i in range(1, 255)) + "\n" + "\n".join(
        line(f"10.244.2.{i}", SLEEP, 1) for i in range(1, 255))
    await peers.expand(many)
    assert len(asked[-1]) == MAX_ADDRESSES


async def test_a_departed_pods_counts_keep_its_labels_until_another_workload_is_there() -> None:
    answers = [{"10.244.0.2": [SLEEP_V1]}, {}, {"10.244.0.2": [OTHER]}]
    now = [0.0]

    async def fetch(addresses: Sequence[str]) -> Mapping[str, Sequence[PeerEntry]]:
        return answers.pop(0)

    peers = AddressMap(fetch, ttl_s=30, clock=lambda: now[0])
    text = line("10.244.0.2", SLEEP, 3)
    assert one(await peers.expand(text))["source_workload"] == "sleep-v1"
    now[0] = 31.0                        # the pod is gone: its counts in Envoy keep sleep-v1
    assert one(await peers.expand(text))["source_workload"] == "sleep-v1"
    now[0] = 62.0                        # another identity's pod got the address: not trusted for SLEEP
    assert one(await peers.expand(text))["source_workload"] == "unknown"


async def test_a_failing_control_plane_leaves_unknown_for_that_scrape() -> None:
    async def fetch(addresses: Sequence[str]) -> Mapping[str, Sequence[PeerEntry]]:
        raise OSError("connection refused")

    got = one(await AddressMap(fetch).expand(line("10.244.0.2", SLEEP, 1)))
    assert got["source_workload"] == "unknown" and got["source_workload_namespace"] == NS


def _workloads(cp: ControlPlane) -> None:
    cp.register_workload(Workload(name="sleep-v1-5d8f7c6b9d-q2w3e", namespace=NS, address="127.0.0.61",
                                  labels={"app": "sleep", "version": "v1"}, service_account="sleep"))


async def test_lookup_on_a_plaintext_control_plane() -> None:
    cp = ControlPlane(ControlPlaneOptions(state_dir=None, xds_port=0, http_port=None,
                                          restore_workloads=False))
    await cp.start()
    channel = grpc.aio.insecure_channel(cp.xds_address)
    try:
        _workloads(cp)
        found = await grpc_fetch(lambda: channel, tuple)(["127.0.0.61", "127.0.0.62"])
        assert found == {"127.0.0.61": [SLEEP_V1]}
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await channel.unary_unary(LOOKUP_METHOD)(encode_request(["x"] * (MAX_ADDRESSES + 1)))
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "at most" in str(e.value.details())
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await channel.unary_unary(LOOKUP_METHOD)(b"{not json")
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await channel.close()
        await cp.stop()


async def test_lookup_over_tls_takes_a_pod_credential_and_plaintext_is_refused(tmp_path: Path) -> None:
    cp = ControlPlane(ControlPlaneOptions(state_dir=tmp_path / "state", xds_port=free_port(),
                                          xds_tls_port=free_port(), http_port=None))
    await cp.start()
    plain = grpc.aio.insecure_channel(cp.xds_address)
    tls: list[ControlPlaneTls] = []
    try:
        _workloads(cp)
        assert cp.identity is not None
        roots = cp.identity.ca.trust_bundle.pem
        credential = cp.identity.issue(NS, "curl-6c5b4a3b2c-zz9yy", "curl").credential
        good = ControlPlaneTls(cp.xds_tls_address, roots, credential)
        bad = ControlPlaneTls(cp.xds_tls_address, roots, "mizzen-pod.bogus")
        tls += [good, bad]
        assert await grpc_fetch(good.channel, good.metadata)(["127.0.0.61"]) == {"127.0.0.61": [SLEEP_V1]}
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await grpc_fetch(bad.channel, bad.metadata)(["127.0.0.61"])
        assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await grpc_fetch(lambda: plain, tuple)(["127.0.0.61"])
        assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
    finally:
        await plain.close()
        for t in tls:
            await t.close()
        await cp.stop()


def test_answers_round_trip() -> None:
    from mizzen.telemetry.peer_address import encode_answer
    assert decode_answer(encode_answer({"10.0.0.1": [SLEEP_V1, OTHER]})) == {"10.0.0.1": [SLEEP_V1, OTHER]}
