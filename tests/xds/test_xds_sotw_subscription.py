"""The SotW subscription test on each request (xds/ads.py ``same_names``): exact, whatever comes.

An ACK usually repeats the names of the request before it, and the stream then skips rebuilding its
subscription; but a subscription can change in any request, an ACK included, so the test must never call
different names the same.
"""

from __future__ import annotations

import random

from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest
from google.rpc import status_pb2
from xds_testlib import eds_cluster, listener, load_assignment, resources, route_config

from mizzen.xds import SnapshotCache
from mizzen.xds.ads import AdsStream, SotwResponse, names_wire, same_names
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from mizzen.xds.status import ProxyStatus, SyncStatus

NODE = "sidecar~127.0.0.1~s1.default~default.svc.cluster.local"
EDS_NAMES = [f"outbound|9080||svc{i}.default.svc.cluster.local" for i in range(8)]


def request(names: list[str], *, version: str = "v1", nonce: str = "7", node: bool = False,
            error: bool = False) -> DiscoveryRequest:
    req = DiscoveryRequest(type_url=ENDPOINT, version_info=version, response_nonce=nonce,
                           resource_names=names)
    if node:
        req.node.id = NODE
    if error:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message="rejected"))
    return req


def check(raw: list[str], names: list[str], **kw: object) -> None:
    """Never "the same" for different names; for the same ones, "the same" unless the request carries a
    node and many names (Envoy sends the node in its first request only: the names are then rebuilt)."""
    req = request(names, **kw)   # type: ignore[arg-type]
    wire = req.SerializeToString()
    # also as received: parsed from the wire, and from fields sent in another order (type_url first)
    reordered = DiscoveryRequest.FromString(DiscoveryRequest(type_url=ENDPOINT).SerializeToString() + wire)
    for r in (req, DiscoveryRequest.FromString(wire), reordered):
        got = same_names(r, raw, names_wire(raw))
        if names != raw:
            assert not got, (raw, names, kw)
        else:
            assert got == (not kw.get("node") or names_wire(raw) is None), (raw, names, kw)


def test_the_names_compare_exactly_in_every_shape_of_change() -> None:
    base = list(EDS_NAMES)
    cases = [
        base,                                       # the same (an ACK)
        list(reversed(base)),                       # reordered
        [*base, "outbound|80||extra"],              # added
        base[:-1],                                  # removed
        [*base[:-1], "outbound|9080||svc9.default.svc.cluster.local"],   # same length, one name differs
        [*base[:-1], base[-1] + "x"],               # a name extended
        [*base[:-1], base[-1][:-1]],                # a name shortened
        ["*"], [], [*base, "*"],                    # wildcard, empty
        [base[0]], base[:3],                        # short lists (compared as lists)
        [n.replace("svc", "svč") for n in base],    # not ASCII
        [*base[:4], "\x1a" * 5, *base[4:]],         # a name holding the field's own tag byte
    ]
    for raw in cases:
        for names in cases:
            for kw in ({}, {"version": ""}, {"version": "x" * 300}, {"version": "vé" * 70}, {"node": True},
                       {"error": True}, {"nonce": ""}):
                check(raw, names, **kw)


def test_random_subscriptions_compare_like_lists() -> None:
    rng = random.Random(9)
    pool = [*EDS_NAMES, "*", "a", "", "\x1a", "é" * 200, "outbound|9080||svc1.default.svc.cluster.loca"]
    for _ in range(3000):
        raw = rng.choices(pool, k=rng.randrange(0, 12))
        names = list(raw) if rng.random() < 0.4 else rng.choices(pool, k=rng.randrange(0, 12))
        if rng.random() < 0.3 and names:
            rng.shuffle(names)
        check(raw, names, version=rng.choice(["", "v1", "y" * 130]), node=rng.random() < 0.2)


def test_an_ack_that_changes_the_names_is_answered_for_the_new_ones() -> None:
    """A stream's EDS ACK naming as many clusters as before but another one: answered with the new set."""
    names = [*EDS_NAMES, "other"]
    rs = resources(clusters=[eds_cluster(n) for n in names],
                   endpoints=[load_assignment(n, [("127.0.0.2", 80)]) for n in names],
                   listeners=[listener("l1", "127.0.0.1", 15001, "r1")], routes=[route_config("r1")])
    cache = SnapshotCache()
    cache.set_snapshot(NODE, rs)
    ads = AdsStream(ProxyStatus(NODE, 1), events=SyncStatus(cache))
    ads.snapshot = cache.get(NODE)
    for t, sub in ((CLUSTER, []), (LISTENER, []), (ROUTE, ["r1"])):
        for resp in ads.sotw_request(DiscoveryRequest(type_url=t, resource_names=sub)):
            assert isinstance(resp, SotwResponse)
            ads.sotw_request(DiscoveryRequest(type_url=resp.type_url, version_info=resp.tsnap.version,
                                              response_nonce=resp.nonce, resource_names=sub))
    first = ads.sotw_request(DiscoveryRequest(type_url=ENDPOINT, resource_names=EDS_NAMES))
    assert [r.names for r in first if isinstance(r, SotwResponse)] == [frozenset(EDS_NAMES)]
    resp = first[0]
    assert isinstance(resp, SotwResponse)
    ack = DiscoveryRequest(type_url=ENDPOINT, version_info=resp.tsnap.version, response_nonce=resp.nonce,
                           resource_names=EDS_NAMES)
    assert ads.sotw_request(ack) == []   # the same names: nothing to send
    swapped = [*EDS_NAMES[:-1], "other"]
    again = ads.sotw_request(DiscoveryRequest(type_url=ENDPOINT, version_info=resp.tsnap.version,
                                              response_nonce=resp.nonce, resource_names=swapped))
    assert [r.names for r in again if isinstance(r, SotwResponse)] == [frozenset(swapped)]
    assert ads.subscribed()[ENDPOINT] == frozenset(swapped)
