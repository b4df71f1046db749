"""Parsing Deployments/Services, Kubernetes' $(VAR) expansion, pod names and container env/argv, on the
shipped bookinfo.yaml and small hand-written manifests."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from mizzen.bookinfo import MANIFEST
from mizzen.runner.containers import CommandError, PodIdentity, container_argv, container_env
from mizzen.runner.manifests import (
    ManifestError,
    expand,
    load_manifests,
    parse_container,
    parse_deployment,
    parse_service,
    pod_name,
    pod_template_hash,
)

ISTIO_BOOKINFO = "tests/fixtures/istio/samples/bookinfo/platform/kube/bookinfo.yaml"


def _ident(**kw: object) -> PodIdentity:
    base: dict[str, object] = dict(
        name="reviews-v2-bcdfghjklm-2x4z5", namespace="bookinfo", pod_ip="127.20.0.7", app_host="127.21.0.7",
        service_account="bookinfo-reviews", labels={"app": "reviews", "version": "v2"}, sidecar=True,
        python="/usr/bin/python3",
    )
    base.update(kw)
    return PodIdentity(**base)  # type: ignore[arg-type]


def test_bookinfo_manifest_mirrors_istio() -> None:
    ours = load_manifests(MANIFEST)
    with open(ISTIO_BOOKINFO) as f:
        istio = [d for d in yaml.safe_load_all(f) if d]
    def ids(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(d["kind"], d["metadata"]["name"]) for d in docs]

    assert ids(ours) == ids(istio)
    for o, i in zip(ours, istio, strict=True):
        if o["kind"] in ("Service", "ServiceAccount"):
            assert o == i
        else:
            assert o["metadata"] == i["metadata"]
            assert o["spec"]["replicas"] == i["spec"]["replicas"]
            assert o["spec"]["selector"] == i["spec"]["selector"]
            assert o["spec"]["template"]["metadata"] == i["spec"]["template"]["metadata"]
            assert o["spec"]["template"]["spec"]["serviceAccountName"] == \
                i["spec"]["template"]["spec"]["serviceAccountName"]
    deps = [parse_deployment(d, "bookinfo") for d in ours if d["kind"] == "Deployment"]
    assert [(d.name, d.namespace, d.replicas, d.service_account) for d in deps][:3] == [
        ("details-v1", "bookinfo", 1, "bookinfo-details"),
        ("ratings-v1", "bookinfo", 1, "bookinfo-ratings"),
        ("reviews-v1", "bookinfo", 1, "bookinfo-reviews"),
    ]
    v3 = next(d for d in deps if d.name == "reviews-v3")
    assert dict(v3.pod_labels) == {"app": "reviews", "version": "v3"}
    (c,) = v3.containers
    assert c.command == ("$(MIZZEN_PYTHON)", "-m", "mizzen.bookinfo", "reviews")
    assert c.args == ("--version", "v3")
    assert [p.container_port for p in c.ports] == [9080]
    env = container_env(c, _ident())
    assert container_argv(c, env, "/usr/bin/python3") == [
        "/usr/bin/python3", "-m", "mizzen.bookinfo", "reviews", "--version", "v3",
    ]
    svc = parse_service(next(d for d in ours if d["kind"] == "Service"), "bookinfo")
    assert (svc.name, dict(svc.selector)) == ("details", {"app": "details"})
    assert svc.ports == (("http", 9080, 9080),)


def test_istio_images_without_command_run_our_apps() -> None:
    istio = load_manifests(ISTIO_BOOKINFO)
    dep = parse_deployment(next(d for d in istio if d["metadata"]["name"] == "reviews-v2"))
    (c,) = dep.containers
    assert container_argv(c, {}, "py") == ["py", "-m", "mizzen.bookinfo", "reviews", "--version", "v2"]
    unknown = parse_deployment({
        "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}}},
    })
    with pytest.raises(CommandError, match="nginx"):
        container_argv(unknown.containers[0], {}, "py")


def test_expand_like_kubernetes() -> None:
    env = {"A": "1", "POD_NAME": "p-1"}
    assert expand("$(A)-$(POD_NAME)", env) == "1-p-1"
    assert expand("$(UNDEFINED) stays", env) == "$(UNDEFINED) stays"
    assert expand("$$(A) is escaped, $$ too", env) == "$(A) is escaped, $ too"
    assert expand("$A and ${A} are not k8s syntax", env) == "$A and ${A} are not k8s syntax"


def test_container_env_order_field_refs_and_proxy() -> None:
    dep = parse_deployment({
        "kind": "Deployment", "metadata": {"name": "x", "namespace": "ns1"},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{
            "name": "c", "command": ["$(MIZZEN_PYTHON)", "$(GREETING)"], "args": ["$(MY_POD)", "$$(HOST)"],
            "ports": [{"containerPort": 7000, "name": "http"}, {"containerPort": 7001}],
            "env": [
                {"name": "GREETING", "value": "hi-$(POD_NAMESPACE)"},
                {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "LATER", "value": "$(NOT_YET)"},
                {"name": "NOT_YET", "value": "x"},
            ]}]}}},
    })
    assert dep.namespace == "ns1" and dep.replicas == 2
    (c,) = dep.containers
    ident = _ident(name="x-abc-12345", namespace="ns1", labels={"app": "x"})
    env = container_env(c, ident)
    assert env["HOST"] == env["MIZZEN_APP_HOST"] == "127.21.0.7"
    assert env["PORT"] == "7000"
    assert env["HOSTNAME"] == env["POD_NAME"] == "x-abc-12345"
    assert env["POD_NAMESPACE"] == "ns1"
    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://127.20.0.7:15080"
    assert env["GREETING"] == "hi-ns1"
    assert env["MY_POD"] == "x-abc-12345" and env["MY_IP"] == "127.20.0.7" and env["APP"] == "x"
    assert env["LATER"] == "$(NOT_YET)"          # only earlier variables expand, like Kubernetes
    assert container_argv(c, env, "py") == ["/usr/bin/python3", "hi-ns1", "x-abc-12345", "$(HOST)"]
    assert "HTTP_PROXY" not in container_env(c, _ident(sidecar=False))


def test_field_refs_of_a_pod_on_a_node() -> None:
    c = parse_container({"name": "c", "env": [
        {"name": n, "valueFrom": {"fieldRef": {"fieldPath": p}}} for n, p in (
            ("NODE", "spec.nodeName"), ("HOST_IP", "status.hostIP"), ("UID", "metadata.uid"),
            ("REV", "metadata.annotations['istio.io/rev']"), ("NONE", "metadata.annotations['missing']"))]},
        "containers[0]")
    env = container_env(c, _ident(host_ip="10.244.228.1", node_name="node-1", uid="u-1",
                                  annotations={"istio.io/rev": "canary"}))
    assert (env["NODE"], env["HOST_IP"], env["UID"], env["REV"], env["NONE"]) == \
        ("node-1", "10.244.228.1", "u-1", "canary", "")
    local = container_env(c, _ident())   # the local model: one node, loopback
    assert (local["NODE"], local["HOST_IP"]) == ("local", "127.0.0.1")


def test_pod_names_look_like_kubernetes() -> None:
    h = pod_template_hash({"spec": 1})
    assert h == pod_template_hash({"spec": 1}) and h != pod_template_hash({"spec": 2})
    names = {pod_name("reviews-v2", h) for _ in range(20)}
    assert len(names) > 15
    for n in names:
        safe = "[bcdfghjklmnpqrstvwxz2456789]"
        assert re.fullmatch(rf"reviews-v2-{safe}{{10}}-{safe}{{5}}", n)


def test_bad_manifests_name_the_field() -> None:
    with pytest.raises(ManifestError, match="containers"):
        parse_deployment({"kind": "Deployment", "metadata": {"name": "d"},
                          "spec": {"template": {"spec": {}}}})
    with pytest.raises(ManifestError, match="replicas"):
        parse_deployment({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": -1}})
    with pytest.raises(ManifestError, match=r"ports\[0\].containerPort"):
        parse_deployment({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {
            "containers": [{"name": "c", "ports": [{"containerPort": "http"}]}]}}}})
