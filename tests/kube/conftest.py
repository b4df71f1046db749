"""One real cluster (with Istio's CRDs installed) shared by the tests of this directory that need it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kube_harness import CRDS, UNAVAILABLE, testcluster


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[Any]:
    if UNAVAILABLE:
        pytest.skip(UNAVAILABLE)
    c = testcluster.TestCluster()
    c.start()
    try:
        c.kubectl("apply", "--server-side", "-f", str(CRDS), timeout=120)
        c.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        yield c
    finally:
        c.stop()
