"""TCP source labels at the server: the downstream peer's address, trusted only with its mTLS identity.

Over HTTP the client's labels travel in a header (:mod:`mizzen.telemetry.exchange`); a TCP connection has no
header, so a server sidecar's TCP stats (``reporter="destination"``) carry the peer's address as one more tag,
:data:`ADDRESS_TAG` (``%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%``), next to ``source_principal`` (the peer
certificate's URI SAN). Where the agent serves Prometheus text (``:15090`` and ``:15020``), once per
distinct series per scrape and never per connection, :meth:`AddressMap.expand` turns that tag into the source
labels with an address-to-workload map from the control plane (:data:`LOOKUP_METHOD`, a unary gRPC call on
the agent's own xDS port and credential) and drops it; series that expand alike are added up.

The trust rule (an address alone is spoofable, an mTLS identity is not): the address's workload is used only
when its namespace and service account are the peer principal's (``spiffe://<td>/ns/<ns>/sa/<sa>``);
several such workloads on one address with different labels (the local mesh's loopback mode, where all
pods share ``127.0.0.1``) are ambiguous and stay ``unknown``. As Istio's stats plugin does,
``source_workload_namespace`` is the principal's namespace whenever there is one; without a peer principal
(plaintext: PERMISSIVE, a caller outside the mesh) every source label stays ``unknown``.

Lookups are cached per address (:data:`TTL_S`; an address the control plane does not know is asked again
after :data:`NEGATIVE_TTL_S` at the earliest), one call per scrape for all the misses, at most
:data:`MAX_ADDRESSES` addresses per call and :data:`TIMEOUT_S` long; a failed or slow lookup leaves the
labels ``unknown`` for that scrape only. An address whose pod left keeps its last workload (Envoy keeps
that pod's counts; moving them to an ``unknown`` series would make a counter jump), until another workload
is found there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc

from mizzen.core.workload_labels import PEER_FIELDS
from mizzen.telemetry.packed import SeriesSum

log = logging.getLogger(__name__)

__all__ = ["ADDRESS_OPERATOR", "ADDRESS_TAG", "LOOKUP_METHOD", "MAX_ADDRESSES", "AddressMap", "PeerEntry",
           "decode_answer", "decode_request", "encode_answer", "encode_request", "expand", "principal_parts"]

ADDRESS_TAG = "mizzen_peer_address"
ADDRESS_OPERATOR = "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
LOOKUP_METHOD = "/mizzen.telemetry.v1.WorkloadAddresses/Lookup"
MAX_ADDRESSES = 256
TTL_S = 30.0
NEGATIVE_TTL_S = 5.0
TIMEOUT_S = 2.0

Fetch = Callable[[Sequence[str]], Awaitable[Mapping[str, Sequence["PeerEntry"]]]]


@dataclass(frozen=True)
class PeerEntry:
    """One workload at an address: its identity (namespace, service account) and its peer labels
    (:data:`mizzen.core.workload_labels.PEER_FIELDS` -> value)."""

    namespace: str
    service_account: str
    labels: tuple[tuple[str, str], ...]

    def to_json(self) -> dict[str, object]:
        return {"namespace": self.namespace, "serviceAccount": self.service_account,
                "labels": dict(self.labels)}

    @staticmethod
    def from_json(doc: object) -> PeerEntry:
        if not isinstance(doc, dict):
            raise ValueError("a workload must be an object")
        labels = doc.get("labels") or {}
        if not isinstance(labels, dict):
            raise ValueError("labels must be an object")
        return PeerEntry(str(doc["namespace"]), str(doc["serviceAccount"]),
                         tuple((f, str(labels[f])) for f in PEER_FIELDS if f in labels))


def encode_request(addresses: Iterable[str]) -> bytes:
    return json.dumps({"addresses": list(addresses)}).encode()


def decode_request(raw: bytes) -> list[str]:
    """The addresses asked for; ValueError (one line) when malformed or more than :data:`MAX_ADDRESSES`."""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ValueError("the request is not JSON") from None
    addresses = doc.get("addresses") if isinstance(doc, dict) else None
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        raise ValueError('want {"addresses": [<ip>, ...]}')
    if len(addresses) > MAX_ADDRESSES:
        raise ValueError(f"at most {MAX_ADDRESSES} addresses per lookup")
    return addresses


def encode_answer(found: Mapping[str, Sequence[PeerEntry]]) -> bytes:
    return json.dumps({"workloads": {a: [e.to_json() for e in es] for a, es in found.items()}}).encode()


def decode_answer(raw: bytes) -> dict[str, list[PeerEntry]]:
    doc = json.loads(raw)
    workloads = doc.get("workloads") if isinstance(doc, dict) else None
    if not isinstance(workloads, dict):
        raise ValueError('want {"workloads": {...}}')
    return {str(a): [PeerEntry.from_json(e) for e in es] for a, es in workloads.items()
            if isinstance(es, list)}


_SPIFFE = re.compile(r"^spiffe://[^/]+/ns/([^/]+)/sa/([^/]+)$")


def principal_parts(principal: str) -> tuple[str, str] | None:
    """``(namespace, service account)`` of an Istio SPIFFE ID, None for anything else."""
    m = _SPIFFE.match(principal)
    return (m[1], m[2]) if m else None


_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\\n]|\\.)*)"')
_SOURCE = {f"source_{f}": f for f in PEER_FIELDS}


def _source_labels(principal: str, entries: Sequence[PeerEntry]) -> dict[str, str]:
    """The source labels a peer principal and its address's workloads stand for (escaped for Prometheus
    text as the principal is; the map's values are escaped here)."""
    parts = principal_parts(principal.replace('\\"', '"').replace("\\\\", "\\"))
    if parts is None:
        return {}                                  # plaintext or not an Istio identity: unknown
    ns, sa = parts
    trusted = {e.labels for e in entries if e.namespace == ns and e.service_account == sa}
    out = {"source_workload_namespace": ns}        # Istio's stats plugin: the namespace from the SAN
    if len(trusted) == 1:
        labels = dict(next(iter(trusted)))
        out |= {k: labels[f] for k, f in _SOURCE.items() if labels.get(f)}
        out["source_workload_namespace"] = ns
    return {k: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in out.items()}


_ADDRESS = re.compile(ADDRESS_TAG + r'="([^"\\\n]*)"')


def _addresses(text: str) -> set[str]:
    """The addresses of the series whose peer has an Istio principal (mTLS)."""
    return {m[1] for line in text.split("\n") if ADDRESS_TAG in line and 'source_principal="spiffe://' in line
            and (m := _ADDRESS.search(line)) is not None and m[1]}


def expand(text: str, workloads: Mapping[str, Sequence[PeerEntry]]) -> str:
    """Prometheus text with every series' :data:`ADDRESS_TAG` turned into its source labels (those the
    series has: a label a Telemetry removed stays removed) and dropped; series that then coincide are added
    up. ``workloads``: address -> the workloads there (the control plane's map)."""
    if ADDRESS_TAG not in text:
        return text
    out = SeriesSum()
    tag = f'{ADDRESS_TAG}="'
    for line in text.split("\n"):
        if tag not in line or line.startswith("#"):
            out.line(line)
            continue
        series, _, value = line.rpartition(" ")
        name, brace, body = series.partition("{")
        labels = _LABEL.findall(body.rstrip("}")) if brace else []
        values = dict(labels)
        address = values.pop(ADDRESS_TAG, "")
        fill = _source_labels(values.get("source_principal", ""), workloads.get(address, ()))
        rendered = ",".join(f'{k}="{fill.get(k, v) if k in _SOURCE else v}"'
                            for k, v in labels if k != ADDRESS_TAG)
        out.series(f"{name}{{{rendered}}}" if rendered else name, value)
    return out.text()


class AddressMap:
    """The agent's cache of the control plane's address-to-workload map; ``fetch`` asks the control plane
    (None: no control plane to ask, so only the principal's namespace is known)."""

    def __init__(self, fetch: Fetch | None, ttl_s: float = TTL_S, negative_ttl_s: float = NEGATIVE_TTL_S,
                 timeout_s: float = TIMEOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.fetch, self.ttl_s, self.negative_ttl_s, self.timeout_s = fetch, ttl_s, negative_ttl_s, timeout_s
        self.clock = clock
        self._cache: dict[str, tuple[float, tuple[PeerEntry, ...]]] = {}   # address -> (expires, entries)
        self.lookups = 0

    def _fresh(self, address: str, now: float) -> tuple[PeerEntry, ...] | None:
        hit = self._cache.get(address)
        return hit[1] if hit is not None and hit[0] > now else None

    async def resolve(self, addresses: Iterable[str]) -> dict[str, tuple[PeerEntry, ...]]:
        """address -> its workloads, asking the control plane once for the misses (bounded)."""
        now = self.clock()
        known = {a: e for a in addresses if (e := self._fresh(a, now)) is not None}
        missing = sorted({a for a in addresses if a not in known and a})[:MAX_ADDRESSES]
        if missing and self.fetch is not None:
            self.lookups += 1
            try:
                found = await asyncio.wait_for(self.fetch(missing), self.timeout_s)
            except Exception as e:          # the control plane is away: unknown for this scrape
                log.info("workload address lookup failed: %s", type(e).__name__)
                return known
            now = self.clock()
            for a in missing:
                entries = tuple(found.get(a, ()))
                old = self._cache.get(a)
                if not entries and old is not None and old[1]:
                    # the pod left, its counts stay in Envoy: they keep its labels (a counter never moves
                    # to another series); a new workload at the address replaces them
                    entries = old[1]
                self._cache[a] = (now + (self.ttl_s if entries else self.negative_ttl_s), entries)
                known[a] = entries
            if len(self._cache) > 4 * MAX_ADDRESSES:    # bounded: keep what this scrape uses
                wanted = set(known)
                self._cache = {a: v for a, v in self._cache.items() if a in wanted}
        return known

    async def expand(self, text: str) -> str:
        """:func:`expand` with the addresses of ``text`` resolved (only those with an mTLS peer principal:
        a plaintext peer's address is never looked up)."""
        if ADDRESS_TAG not in text:
            return text
        wanted = _addresses(text)
        return expand(text, await self.resolve(wanted) if wanted else {})


def grpc_fetch(channel: Callable[[], grpc.aio.Channel],
               metadata: Callable[[], Sequence[tuple[str, str]]]) -> Fetch:
    """A :data:`Fetch` over the agent's channel to the control plane (``channel()``: a ``grpc.aio.Channel``,
    the TLS one with its credential in ``metadata()``, or the plaintext xDS port's)."""

    async def fetch(addresses: Sequence[str]) -> Mapping[str, Sequence[PeerEntry]]:
        call = channel().unary_unary(LOOKUP_METHOD)
        raw: bytes = await call(encode_request(addresses), metadata=tuple(metadata()), timeout=TIMEOUT_S)
        return decode_answer(raw)

    return fetch
