"""A proxyless gRPC client for test_e2e_proxyless_grpc: dials ``xds:///<target>`` with the bootstrap named by
``GRPC_XDS_BOOTSTRAP`` and, for each JSON line on stdin ``{"n": N, "headers": {...}}``, makes N calls of
``/mizzen.test.Who/Name`` and prints one JSON line: which server answered how often (or the errors)."""

from __future__ import annotations

import json
import sys
from collections import Counter

import grpc


def main() -> None:
    target = sys.argv[1]
    with grpc.insecure_channel(f"xds:///{target}") as channel:
        call = channel.unary_unary("/mizzen.test.Who/Name")
        for line in sys.stdin:
            req = json.loads(line)
            seen: Counter[str] = Counter()
            metadata = tuple(req.get("headers", {}).items())
            for _ in range(int(req["n"])):
                try:
                    seen[call(b"", timeout=10, metadata=metadata, wait_for_ready=True).decode()] += 1
                except grpc.RpcError as e:
                    seen[f"error {e.code().name}: {e.details()}"] += 1   # type: ignore[attr-defined]
            print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
