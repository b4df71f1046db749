"""Shared by tests/kube: the throwaway cluster harness (tools/kube/testcluster.py) loaded by path, whether a
cluster can run here, and a small polling helper."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "src" / "mizzen" / "config" / "schemas" / "crd-all.gen.yaml"
SAMPLES = ROOT / "tests" / "fixtures" / "istio" / "samples" / "bookinfo" / "networking"
T = TypeVar("T")


def _load(name: str = "mizzen_testcluster", file: str = "testcluster.py") -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "kube" / file)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


testcluster = _load()
nodeagent = _load("mizzen_nodeagent", "nodeagent.py")
UNAVAILABLE = testcluster.unavailable_reason()


def namespace_ready(cluster: Any, namespace: str, timeout: float = 60.0) -> None:
    """Until a new namespace has what a pod there mounts by default: the ``default`` ServiceAccount and the
    ``kube-root-ca.crt`` ConfigMap of its kube-api-access volume. The controller-manager publishes that
    ConfigMap about 0.5 s after the ServiceAccount: a pod created in between fails its first mount and waits
    for the node agent's retry backoff (1, 2, 4, ... s, as a kubelet's)."""
    want = {"serviceaccount/default", "configmap/kube-root-ca.crt"}
    wait_for(lambda: want <= set(cluster.kubectl("get", "sa,cm", "-n", namespace, "-o", "name").split()),
             timeout, f"namespace {namespace}: default ServiceAccount and kube-root-ca.crt")


def wait_for(fn: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: T = fn()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s (last: {last!r})")
        time.sleep(0.2)
        last = fn()
    return last
