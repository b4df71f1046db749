"""Scoped pushes with real Envoys: a workload joining a service sends only EDS, only to the proxies that see
the service; a Sidecar-scoped proxy gets nothing for a change outside its scope; /metrics follows along."""

from __future__ import annotations

import pytest

from harness import Agent, Mesh, alloc_ip, eventually, scrape
from mizzen.registry.model import Workload
from mizzen.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

pytestmark = pytest.mark.e2e

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: reviews}
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: scoped}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: local}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: scoped}
spec:
  egress:
  - hosts: ["./*"]
"""
DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
"""
TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


def responses(mesh: Mesh, agent: Agent) -> dict[str, int]:
    """Responses sent so far on the proxy's stream, per type."""
    ps = mesh.cp.status.proxy(agent.node_id)
    assert ps is not None
    return {t: ps.of(t).responses for t in TYPES}


def sent_since(before: dict[str, int], after: dict[str, int]) -> tuple[int, set[str]]:
    """(responses sent on the stream in between, the types that got one)."""
    return sum(after.values()) - sum(before.values()), {t for t in TYPES if after[t] != before[t]}


async def test_endpoint_change_is_eds_only_to_proxies_that_see_the_service() -> None:
    async with Mesh() as mesh, mesh.api_client() as api:
        await mesh.apply_yaml(SERVICES)
        seer = await mesh.sidecar("bookinfo", "productpage-1", {"app": "productpage"})
        blind = await mesh.sidecar("scoped", "local-1", {"app": "local"})
        # reviews already has an endpoint of the account the next one joins with: a new account would change
        # the clusters' SANs, which (as in istiod) takes a cluster push too
        mesh.cp.register_workload(Workload("reviews-v1-0", "bookinfo", alloc_ip(), {"app": "reviews",
                                                                                     "version": "v1"}))
        await mesh.wait_synced()
        assert "outbound|9080||reviews.bookinfo.svc.cluster.local" not in mesh.cp.cache.get(  # type: ignore[union-attr]
            blind.node_id).of(CLUSTER).resources
        seer0, blind0 = responses(mesh, seer), responses(mesh, blind)
        metrics0 = scrape((await api.get("/metrics")).text)

        address = alloc_ip()
        mesh.cp.register_workload(Workload("reviews-v1-a", "bookinfo", address, {"app": "reviews",
                                                                                 "version": "v1"}))
        await mesh.wait_synced()
        count, types = sent_since(seer0, responses(mesh, seer))
        assert (count, types) == (1, {ENDPOINT})                 # one EDS response, nothing else
        assert sent_since(blind0, responses(mesh, blind)) == (0, set())   # does not see reviews
        stats = (await api.get("/debug/push_status")).json()
        assert stats["full"] is False and stats["types"] == ["EDS"] and stats["proxies_changed"] == 1

        async def envoy_has_endpoint() -> None:
            assert address in await seer.admin_get("/clusters")
        await eventually(envoy_has_endpoint)

        metrics1 = scrape((await api.get("/metrics")).text)
        for key in ('pilot_xds_pushes{type="eds"}', 'pilot_inbound_updates{type="eds"}',
                    "pilot_proxy_convergence_time_count", "pilot_debounce_time_count",
                    "pilot_pushcontext_init_seconds_count"):
            assert metrics1[key] > metrics0.get(key, 0), key
        assert metrics1.get('pilot_xds_pushes{type="cds"}') == metrics0.get('pilot_xds_pushes{type="cds"}')
        assert sum(v for k, v in metrics1.items() if k.startswith("pilot_xds{")) == 2   # connected proxies
        assert metrics1['istio_build{component="pilot",tag="0.1.0"}'] == 1
        assert metrics1["process_resident_memory_bytes"] > 0
        # pilot_xds_push_time is observed per proxy and type, with every response (as istiod's pushXds does),
        # not once per push: its count follows pilot_xds_pushes
        for t in ("cds", "eds", "lds", "rds"):
            assert metrics1[f'pilot_xds_push_time_count{{type="{t}"}}'] == metrics1[
                f'pilot_xds_pushes{{type="{t}"}}'], t
        assert (metrics1['pilot_xds_push_time_count{type="eds"}']
                - metrics0['pilot_xds_push_time_count{type="eds"}']) == 1   # one proxy got one EDS response

        # the workload goes away: again EDS only, again only to the proxy that sees reviews
        seer1, blind1 = responses(mesh, seer), responses(mesh, blind)
        assert mesh.cp.remove_workload("bookinfo", "reviews-v1-a")
        await mesh.wait_synced()
        assert sent_since(seer1, responses(mesh, seer)) == (1, {ENDPOINT})
        assert sent_since(blind1, responses(mesh, blind)) == (0, set())


async def test_sidecar_scoped_proxy_gets_no_push_for_a_change_outside_its_scope() -> None:
    async with Mesh() as mesh:
        await mesh.apply_yaml(SERVICES)
        seer = await mesh.sidecar("bookinfo", "productpage-1", {"app": "productpage"})
        blind = await mesh.sidecar("scoped", "local-1", {"app": "local"})
        await mesh.wait_synced()
        seer0, blind0 = responses(mesh, seer), responses(mesh, blind)
        blind_snap = mesh.cp.cache.get(blind.node_id)

        await mesh.apply_yaml(DR)   # reviews' subsets: outside the scoped proxy's egress hosts
        await mesh.wait_synced()
        _count, types = sent_since(seer0, responses(mesh, seer))
        assert CLUSTER in types and LISTENER not in types         # a DR is not read by LDS
        assert sent_since(blind0, responses(mesh, blind)) == (0, set())
        assert mesh.cp.cache.get(blind.node_id) is blind_snap      # not even regenerated

        async def envoy_has_subset() -> None:
            assert "outbound|9080|v1|reviews.bookinfo.svc.cluster.local" in await seer.admin_get("/clusters")
        await eventually(envoy_has_subset)

        # a change inside its scope does reach it
        await mesh.apply_yaml(SERVICES.replace("ports: [{port: 9080, name: http}]\n  selector: {app: local}",
                                               "ports: [{port: 9080, name: http}, {port: 9090, name: grpc}]\n"
                                               "  selector: {app: local}"))
        await mesh.wait_synced()
        assert sent_since(blind0, responses(mesh, blind))[0] > 0
