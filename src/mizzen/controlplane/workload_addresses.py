"""The address-to-workload map agents expand TCP source labels with (:mod:`mizzen.telemetry.peer_address`):
a unary gRPC method (:data:`~mizzen.telemetry.peer_address.LOOKUP_METHOD`) on the xDS ports, in the spirit of
Istio's workload discovery (WDS, which gives ztunnel every workload's address and identity).

Asked for up to 256 addresses, it answers each known one's workloads (namespace, service account, Istio's
peer labels) from the current registry snapshot, indexed once per snapshot. On the TLS port the caller must
authenticate as an xDS stream does (any mesh workload: Istio's WDS is not scoped either). The plaintext port
(istiod's 15010: tests, tools) answers anonymously only while the control plane has no mesh identity; with
one, it refuses (PERMISSION_DENIED), as it refuses plaintext streams for nodes an identity holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from mizzen.core.workload_labels import peer_labels
from mizzen.registry.model import RegistrySnapshot
from mizzen.security.authn import AuthenticationError, Authenticator, authenticate
from mizzen.security.xdsauth import is_tls, request_context
from mizzen.telemetry.peer_address import LOOKUP_METHOD, PeerEntry, decode_request, encode_answer

__all__ = ["WorkloadAddresses"]


class WorkloadAddresses:
    def __init__(self, snapshot: Callable[[], RegistrySnapshot],
                 authenticators: Callable[[], Sequence[Authenticator]],
                 tls_only: Callable[[], bool] = lambda: False) -> None:
        self.snapshot, self.authenticators, self.tls_only = snapshot, authenticators, tls_only
        self._index: tuple[RegistrySnapshot, dict[str, tuple[PeerEntry, ...]]] | None = None

    def index(self) -> dict[str, tuple[PeerEntry, ...]]:
        snap = self.snapshot()
        if self._index is None or self._index[0] is not snap:
            by_address: dict[str, list[PeerEntry]] = {}
            for w in snap.workloads:
                labels = tuple(peer_labels(w.name, w.namespace, w.labels).fields().items())
                entry = PeerEntry(w.namespace, w.service_account, labels)
                if entry not in by_address.setdefault(w.address, []):
                    by_address[w.address].append(entry)
            self._index = (snap, {a: tuple(es) for a, es in by_address.items()})
        return self._index[1]

    def lookup(self, addresses: Sequence[str]) -> dict[str, tuple[PeerEntry, ...]]:
        index = self.index()
        return {a: index[a] for a in addresses if a in index}

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        service, _, method = LOOKUP_METHOD.strip("/").rpartition("/")
        return grpc.method_handlers_generic_handler(
            service, {method: grpc.unary_unary_rpc_method_handler(self._lookup)})

    async def _lookup(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        if is_tls(context):
            try:
                await authenticate(self.authenticators(), request_context(context))
            except AuthenticationError as e:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        elif self.tls_only():
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "workload addresses are served over TLS "
                                "only on a control plane with a mesh identity")
        try:
            addresses = decode_request(raw)
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise AssertionError("unreachable") from None
        return encode_answer(self.lookup(addresses))
