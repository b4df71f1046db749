"""The simulator on input it cannot take or configuration it cannot follow: one clear line, never a crash.

A regex rewrite that references a capture group its pattern lacks (what ``convert ingress`` used to emit for
``rewrite-target: /$2``), unparsable URLs, resources it cannot decode, and a gateway whose Gateway port 80 is
served on a non-default listen port (a demo started with ``--port 18080``)."""

from __future__ import annotations

import dataclasses

import pytest
from envoy.config.listener.v3 import listener_pb2
from simulate_kit import NET, SEED, ingress_gateway, push, resources

from mizzen.config.loader import load_text
from mizzen.config.model import ConfigSnapshot
from mizzen.core.generate import generate
from mizzen.core.push_context import PushContext
from mizzen.simulate import InvalidRequest, SimRequest, render, simulate
from mizzen.xds.resources import LISTENER, ResourceSet

GATEWAY = NET / "bookinfo-gateway.yaml"
REWRITE_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: rewrite, namespace: bookinfo}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {prefix: /old}}]
    rewrite: {uriRegexRewrite: {match: "^/old(.*)", rewrite: "/new\\\\1"}}
    route: [{destination: {host: productpage, port: {number: 9080}}}]
"""


def _resources_with_rewrite(rewrite: str) -> ResourceSet:
    """The gateway's resources for a VirtualService whose regex rewrite is ``rewrite``: loaded valid, then
    changed behind validation's back (as a store written before validation knew the rule would hold it)."""
    base = push(GATEWAY)
    loaded = load_text(REWRITE_VS, "vs.yaml", "bookinfo")
    assert not loaded.errors, [str(e) for e in loaded.errors]
    vs = loaded.configs[0]
    spec = dict(vs.spec)
    http = dict(spec["http"][0])
    http["rewrite"] = {"uriRegexRewrite": {"match": "^/old.*", "rewrite": rewrite}}
    spec["http"] = [http]
    bad = dataclasses.replace(vs, spec=spec, created=1e9)
    configs = ConfigSnapshot.of([*base.configs, bad])
    return generate(ingress_gateway(), PushContext.build(configs, base.registry))


def test_rewrite_to_a_missing_group_is_explained_not_a_crash() -> None:
    g = ingress_gateway()
    r = simulate(_resources_with_rewrite("/new/\\2"), SimRequest("http://any.example/old/x"), g.id)
    assert r["status"] == "route"
    refused = r["policies"]["rewrite_refused"]
    assert "group \\2" in refused and "no capture groups" in refused and "unchanged" in refused
    assert "rewrite" not in r["policies"]          # the path goes upstream as it came
    assert refused in r["why"]
    assert "refused by RE2" in render(r, verbose=True)


def test_a_valid_group_rewrite_still_rewrites() -> None:
    g = ingress_gateway()
    res = _resources_with_rewrite("/new\\0")
    r = simulate(res, SimRequest("http://any.example/old/x"), g.id)
    assert r["policies"]["rewrite"]["path"] == "/new/old/x" and "rewrite_refused" not in r["policies"]


@pytest.mark.parametrize(("url", "reason"), [
    ("http://[::1", "Invalid IPv6 URL"),
    ("http://a:99999/", "Port out of range"),
    ("http://a:x/", "Port could not be cast"),
    ("ftp://a/b", "scheme 'ftp' is not simulated"),
    ("", "the URL is empty"),
    ("http://a/b c", "whitespace"),
])
def test_unparsable_requests_raise_one_clear_error(url: str, reason: str) -> None:
    g = ingress_gateway()
    with pytest.raises(InvalidRequest, match=reason) as info:
        simulate(resources(g, GATEWAY), SimRequest(url), g.id)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidRequest, match="direction must be one of"):
        simulate(resources(g, GATEWAY), SimRequest("/x", direction="sideways"), g.id)


def test_resources_it_cannot_read_give_an_error_status_not_an_exception() -> None:
    g = ingress_gateway()
    res = resources(g, GATEWAY)
    broken: dict[str, object] = {}
    for name, lis in res.of(LISTENER).items():
        assert isinstance(lis, listener_pb2.Listener)
        copy = listener_pb2.Listener()
        copy.CopyFrom(lis)
        for chain in copy.filter_chains:
            for f in chain.filters:
                f.typed_config.value = b"\xff\xff\xff not a connection manager"
        broken[name] = copy
    bad = ResourceSet({**res.by_type, LISTENER: broken})
    r = simulate(bad, SimRequest("http://any.example/productpage"), g.id)
    assert r["status"] == "error"
    assert r["reason"].startswith("the simulator could not evaluate this request: ")
    assert "\n" not in r["reason"]
    render(r)


def test_gateway_port_80_is_found_on_the_proxys_mapped_listen_port() -> None:
    g = dataclasses.replace(ingress_gateway(), gateway_ports={80: 18080, 443: 18443})
    res = generate(g, push(SEED / "bookinfo-gateway.yaml"))     # a Gateway server on port 80
    # what `mizzen simulate istio-ingressgateway http://host/path` answered before: the default map only
    old = simulate(res, SimRequest("http://bookinfo.kubeasy.com/productpage"), g.id)
    assert old["status"] == "error" and "[8080]" in old["reason"]
    r = simulate(res, SimRequest("http://bookinfo.kubeasy.com/productpage"), g.id, g.gateway_ports)
    assert r["status"] == "route" and r["listener"]["port"] == 18080
    assert "Gateway port 80 is served on listen port 18080" in " ".join(r["why"])
    at_listen_port = SimRequest("http://bookinfo.kubeasy.com:18080/productpage")
    explicit = simulate(res, at_listen_port, g.id, g.gateway_ports)
    assert explicit["status"] == "route" and explicit["listener"]["port"] == 18080

