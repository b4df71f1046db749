"""The seed's Bookinfo walk on the real test cluster (issue 15, "What must be shown"), one module-scoped
walk: ``mizzen install`` (two istiod replicas as pods the node agent runs from the installed Deployment, its
webhooks reached by the API server through the istiod Service, the installed ingress gateway Deployment),
``kubectl label namespace bookinfo istio-injection=enabled``, ``kubectl apply`` of Istio's unchanged
``bookinfo.yaml``: the webhook on an istiod pod injects the pods and the node agent runs them with transparent
capture (istio-init's iptables, no HTTP_PROXY); their proxies use Istio's default ``controlPlaneAuthPolicy:
MUTUAL_TLS``, the CA and xDS at ``istiod.istio-system.svc:15012`` (the pod's /etc/hosts, kube-proxy's DNAT).
Then the seed's section 4 with ``kubectl apply``: north-south through the ingress gateway (Istio's sample
Gateway, the seed's host match, redirect, rewrite) and east-west from inside the productpage pod (all-v1,
80/20, jason A/B, load balancing, circuit breaking, delay, abort); section 5 (the seed's nginx Ingresses
through ``mizzen convert ingress``, north-south and east-west); an invalid VirtualService refused;
``sidecar.istio.io/inject: "false"``; ``mizzen kube-inject`` equal to the webhook; and last, kill -9 of the
leader pod's process. The verdicts are tests/seed_checks.py's, shared with tests/e2e.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kube_harness import ROOT, SAMPLES, UNAVAILABLE, nodeagent, wait_for
from walk_world import (
    INSTALL_SETS,
    LEASE_TTL_S,
    MIZZEN,
    SYSTEM_NS,
    InstalledIstiod,
    echo_app_container,
    pod_load,
    pod_requests,
    until,
)

import seed_checks
from mizzen.kube.leader import NAMESPACE_CONTROLLER, VALIDATION_CONTROLLER
from mizzen.kube.rootcert import CONFIGMAP, DATA_KEY
from mizzen.kube.webhooks.configuration import DEFAULT_VALIDATOR_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")]

NS, DEMO = "bookinfo", "demo"
NODE = "mizzen-walk"
BOOKINFO = ROOT / "tests" / "fixtures" / "istio" / "samples" / "bookinfo" / "platform" / "kube" / \
    "bookinfo.yaml"
SEED = ROOT / "tests" / "fixtures" / "seed"
INGRESSES = ROOT / "tests" / "cli" / "fixtures"
DEPLOYMENTS = ("details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1")
REVIEWS = "http://reviews:9080/reviews/0"
DETAILS = "http://details:9080/details/0"
RATINGS = "http://ratings:9080/ratings/0"
SEED_HOST = {"Host": "bookinfo.kubeasy.com"}


@dataclass
class Walk:
    cluster: Any
    node: Any
    istiod: InstalledIstiod

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 60.0) -> str:
        return str(self.cluster.kubectl(*args, stdin=stdin, timeout=timeout))

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def apply(self, text: str, ns: str = NS) -> None:
        self.kubectl("apply", "-n", ns, "-f", "-", stdin=text)

    def pods(self, ns: str, selector: str) -> list[Any]:
        return [p for p in self.json("get", "pods", "-n", ns, "-l", selector)["items"]
                if not p["metadata"].get("deletionTimestamp")]

    def netns(self, ns: str, app: str) -> str:
        (pod,) = self.pods(ns, f"app={app}")
        run = self.node.pod_by_name(ns, pod["metadata"]["name"])
        assert run is not None, pod["metadata"]["name"]
        return str(run.netns)

    def gateway_ip(self) -> str:
        (pod,) = self.pods(SYSTEM_NS, "istio=ingressgateway")
        return str(pod["status"]["podIP"])

    def gateway(self, path: str, headers: dict[str, str] | None = None, port: int = 8080) -> httpx.Response:
        """A request from the host to the ingress gateway pod (the host reaches pod IPs on the bridge)."""
        with httpx.Client(trust_env=False, timeout=10, follow_redirects=False) as c:
            try:
                return c.get(f"http://{self.gateway_ip()}:{port}{path}", headers=headers)
            except httpx.TransportError as e:     # e.g. the listener not pushed yet
                raise AssertionError(f"the gateway: {e!r}") from e



def _ensure_namespace(w: Walk, ns: str) -> None:
    w.kubectl("apply", "-f", "-", stdin=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n")


def _mizzen(w: Walk, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MIZZEN, *args, "--kubeconfig", str(w.cluster.kubeconfig)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "NO_COLOR": "1"}, check=False)


def _kube_inject(w: Walk, text: str, ns: str) -> str:
    # as istioctl kube-inject: the injector's config, values and mesh config from the cluster's ConfigMaps
    r = subprocess.run([MIZZEN, "kube-inject", "-f", "-", "-n", ns, "--kubeconfig",
                        str(w.cluster.kubeconfig)], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _injector_patched(w: Walk) -> bool:
    """The leader wrote the mesh root into istio-sidecar-injector's caBundle (the chart leaves it empty)."""
    hooks = w.json("get", "mutatingwebhookconfiguration", "istio-sidecar-injector")["webhooks"]
    return all(h["clientConfig"].get("caBundle") for h in hooks)


def _wait_deployments(w: Walk, ns: str, names: tuple[str, ...], timeout: int = 150) -> None:
    for d in names:
        w.kubectl("rollout", "status", "-n", ns, f"deployment/{d}", f"--timeout={timeout}s",
                  timeout=timeout + 10)


@pytest.fixture(scope="module")
def walk(kube_cluster: Any) -> Iterator[Walk]:
    c = kube_cluster
    t0 = time.monotonic()
    node = nodeagent.NodeAgent(c, NODE, kube_proxy=True, lease_renew_s=2.0)
    node.start()
    w = Walk(c, node, InstalledIstiod(c, node))
    install: subprocess.Popen[str] | None = None
    try:
        sets = [a for kv in INSTALL_SETS for a in ("--set", kv)]
        install = subprocess.Popen([MIZZEN, "install", "-y", *sets, "--kubeconfig", str(c.kubeconfig)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "NO_COLOR": "1"})
        assert install.stdout is not None
        lines = []
        for line in install.stdout:           # istiod ready: bookinfo goes in while the gateway starts
            lines.append(line)
            if line.startswith("✔ Istiod installed"):
                break
        assert lines and lines[-1].startswith("✔ Istiod installed"), "".join(lines) + w.istiod.log()
        istiod_s = time.monotonic() - t0
        assert len(w.istiod.runs()) == 2, [x.name for x in w.istiod.runs()]
        wait_for(lambda: _injector_patched(w), timeout=30, what="istio-sidecar-injector's caBundle")
        w.kubectl("create", "namespace", NS)
        w.kubectl("label", "namespace", NS, "istio-injection=enabled")
        w.apply(BOOKINFO.read_text())        # unchanged: the webhook injects the pods
        rest = install.communicate(timeout=240)[0]
        assert install.returncode == 0, "".join(lines) + rest
        assert rest.splitlines() == ["✔ Ingress gateways installed", "✔ Installation complete"], rest
        _wait_deployments(w, NS, DEPLOYMENTS)
        print(f"walk set up in {time.monotonic() - t0:.1f} s (istiod ready {istiod_s:.1f} s after the start)")
        yield w
    finally:
        for ns in (NS, DEMO):
            c.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false")
        if install is not None and install.poll() is None:
            install.kill()
            install.communicate()
        u = _mizzen(w, "uninstall", "--purge", "-y")   # istio-system gone, its pods confirmed by the node
        node.stop()
    assert u.returncode == 0, u.stdout + u.stderr


def _holder(w: Walk, lease: str) -> str | None:
    try:
        return w.json("get", "lease", "-n", SYSTEM_NS, lease)["spec"].get("holderIdentity")
    except RuntimeError:   # not created yet
        return None


def review_versions(w: Walk, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
    """Answers of reviews to ``n`` requests from productpage pod, by version (of its pod name)."""
    seen: Counter[str] = Counter()
    for status, body, _, _ in pod_requests(w.netns(NS, "productpage"), REVIEWS, n, headers):
        seen[json.loads(body)["podname"].split("-")[1] if status == 200 else f"HTTP {status}"] += 1
    return seen


# --- the walk -----------------------------------------------------------------------------------------------


def test_bookinfo_runs_on_the_node(walk: Walk) -> None:
    pods = walk.pods(NS, "app")
    assert len(pods) == len(DEPLOYMENTS), [p["metadata"]["name"] for p in pods]
    for p in pods:
        assert p["spec"]["nodeName"] == NODE and p["status"]["phase"] == "Running"   # bound by the scheduler
    (page,) = walk.pods(NS, "app=productpage")
    with httpx.Client(trust_env=False, timeout=10) as c:     # productpage calls details and reviews itself
        r = c.get(f"http://{page['status']['podIP']}:9080/productpage")
    assert r.status_code == 200 and "Book Details" in r.text and "Book Reviews" in r.text, r.text[:500]


def test_pods_are_injected_with_transparent_capture(walk: Walk) -> None:
    for p in walk.pods(NS, "app"):
        names = [c["name"] for c in p["spec"]["containers"]]
        assert "istio-proxy" in names, names
        assert "sidecar.istio.io/status" in p["metadata"]["annotations"]
        assert [c["name"] for c in p["spec"]["initContainers"]] == ["istio-init"]
        run = walk.node.pod_by_name(NS, p["metadata"]["name"])
        for name, c in run.containers.items():      # the processes: no proxy in any environment
            env = Path(f"/proc/{c.proc.pid}/environ").read_bytes().split(b"\0")
            assert not [e for e in env if e.lower().startswith(b"http_proxy=")], name
        rules = subprocess.run(["ip", "netns", "exec", run.netns, "iptables-save", "-t", "nat"],
                               capture_output=True, text=True).stdout
        assert "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in rules, rules
        assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules, rules
        _proxy_speaks_mtls_to_istiods_cluster_ip(walk, p, run)


def _proxy_speaks_mtls_to_istiods_cluster_ip(walk: Walk, pod: Any, run: Any) -> None:
    """Istio's defaults, not the walk's: MUTUAL_TLS to the chart's CA_ADDR/discoveryAddress; the agent's
    connection goes to the istiod Service's ClusterIP on 15012 (the pod's /etc/hosts; kube-proxy's DNAT)."""
    (proxy,) = [c for c in pod["spec"]["containers"] if c["name"] == "istio-proxy"]
    env = {e["name"]: e.get("value") for e in proxy.get("env") or []}
    assert env["CA_ADDR"] == "istiod.istio-system.svc:15012", env
    proxy_config = json.loads(env.get("PROXY_CONFIG") or "{}")
    assert proxy_config.get("controlPlaneAuthPolicy", "MUTUAL_TLS") == "MUTUAL_TLS", proxy_config
    assert proxy_config["discoveryAddress"] == "istiod.istio-system.svc:15012", proxy_config
    istiod_ip = walk.json("get", "service", "istiod", "-n", SYSTEM_NS)["spec"]["clusterIP"]
    assert f"{istiod_ip}\tistiod.istio-system.svc.cluster.local istiod.istio-system.svc" in \
        Path(f"/etc/netns/{run.netns}/hosts").read_text()
    ss = subprocess.run(["ip", "netns", "exec", run.netns, "ss", "-Htn", "state", "established"],
                        capture_output=True, text=True).stdout
    assert f"{istiod_ip}:15012" in ss.replace("]", "").replace("[::ffff:", ""), ss   # v4 or v4-mapped


def test_opt_out_gets_no_sidecar(walk: Walk) -> None:
    for key in ("labels", "annotations"):
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"opt-out-{key}", "namespace": NS, "labels": {"app": "opt-out"},
                            key: {"sidecar.istio.io/inject": "false"}},
               "spec": {"containers": [{"name": "app", "image": "example/sleep",
                                        "command": [sys.executable, "-c", "import time; time.sleep(600)"]}]}}
        if key == "labels":
            pod["metadata"]["labels"]["sidecar.istio.io/inject"] = "false"
        created = json.loads(walk.kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(pod)))
        try:
            assert [c["name"] for c in created["spec"]["containers"]] == ["app"]
            assert not created["spec"].get("initContainers")
            assert "sidecar.istio.io/status" not in (created["metadata"].get("annotations") or {})
        finally:
            walk.kubectl("delete", "pod", "-n", NS, created["metadata"]["name"], "--wait=false")


def _comparable(pod: dict[str, Any]) -> dict[str, Any]:
    """What injection decides in a pod: containers, init containers, volumes, Istio's labels and annotations;
    without what the cluster adds to a running pod (the service-account volume, the ReplicaSet's hash label,
    the node's topology labels copied at binding) and with Kubernetes' defaulted port protocol in
    ISTIO_META_POD_PORTS (the webhook sees the defaulted pod, kube-inject the file: the same in Istio)."""
    spec = pod["spec"]

    def env(e: dict[str, Any]) -> dict[str, Any]:
        if e["name"] != "ISTIO_META_POD_PORTS":
            return e
        return {**e, "value": [{"protocol": "TCP", **p} for p in json.loads(e["value"])]}

    def mounts(c: dict[str, Any]) -> dict[str, Any]:
        return {**c, "env": [env(e) for e in c.get("env") or []],
                "volumeMounts": [m for m in c.get("volumeMounts") or []
                                 if not m["name"].startswith("kube-api-access-")]}
    meta = pod["metadata"]
    return {
        "containers": [mounts(c) for c in spec["containers"]],
        "initContainers": [mounts(c) for c in spec.get("initContainers") or []],
        "volumes": [v for v in spec.get("volumes") or [] if not v["name"].startswith("kube-api-access-")],
        "securityContext": spec.get("securityContext"),
        "labels": {k: v for k, v in (meta.get("labels") or {}).items()
                   if k != "pod-template-hash" and not k.startswith("topology.kubernetes.io/")},
        "annotations": meta.get("annotations") or {},
    }


def test_kube_inject_equals_the_webhook(walk: Walk) -> None:
    """``mizzen kube-inject --kubeconfig`` of the same bookinfo.yaml (the installed ConfigMaps) gives the pods
    the webhook made: each injected template, created as a Pod with a server-side dry run (the API server's
    defaults; the webhook leaves an already injected pod alone), equals the running pod of that Deployment."""
    out = _kube_inject(walk, BOOKINFO.read_text(), NS)
    templates = {d["metadata"]["name"]: d["spec"]["template"] for d in yaml.safe_load_all(out)
                 if d and d["kind"] == "Deployment"}
    assert set(templates) == set(DEPLOYMENTS)
    for name, template in templates.items():
        pod = {"apiVersion": "v1", "kind": "Pod", "spec": template["spec"],
               "metadata": {**template["metadata"], "generateName": f"{name}-", "namespace": NS}}
        dry = json.loads(walk.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                                      stdin=json.dumps(pod)))
        (live,) = walk.pods(NS, f"app={template['metadata']['labels']['app']},"
                                f"version={template['metadata']['labels']['version']}")
        want, got = (json.dumps(_comparable(x), indent=1, sort_keys=True).splitlines() for x in (dry, live))
        assert want == got, f"{name}:\n" + "\n".join(difflib.unified_diff(want, got, "kube-inject", "webhook",
                                                                          lineterm="", n=2))


def test_gateway_serves_istios_sample(walk: Walk) -> None:
    walk.apply((SAMPLES / "bookinfo-gateway.yaml").read_text())       # Istio's: port 8080, hosts "*"

    def page() -> None:
        r = walk.gateway("/productpage")
        assert r.status_code == 200 and "Book Details" in r.text, (r.status_code, r.text[:300])
    until(page, timeout=60)
    assert walk.gateway("/details/0").status_code == 404           # no rule for it


def test_seed_gateway_host_match_redirect_and_rewrite(walk: Walk) -> None:
    # the seed's 4.2 (port 80: the gateway's 8080, host bookinfo.kubeasy.com) and 4.3, same names: replaced
    walk.apply((SEED / "bookinfo-gateway.yaml").read_text())
    walk.apply((SEED / "bookinfo-vs-redirect-rewrite.yaml").read_text())

    def redirected() -> None:
        r = walk.gateway("/yunwei", SEED_HOST)
        seed_checks.redirected(r.status_code, r.headers.get("location"))
    until(redirected, timeout=60)
    assert walk.gateway("/yunwei/anything", SEED_HOST).status_code == 301      # prefix
    r = walk.gateway("/", SEED_HOST)                                           # rewrite / -> /productpage
    assert r.status_code == 200 and "Book Details" in r.text, r.text[:300]
    assert walk.gateway("/productpage", {"Host": "other.example.com"}).status_code == 404


def test_all_v1_then_80_20(walk: Walk) -> None:
    walk.apply((SAMPLES / "destination-rule-all.yaml").read_text())
    walk.apply((SAMPLES / "virtual-service-all-v1.yaml").read_text())
    until(lambda: seed_checks.only(review_versions(walk, 10), "v1", 10), timeout=60)
    seed_checks.only(review_versions(walk, 30), "v1", 30)
    walk.apply((SEED / "reviews-80v1-20v2.yaml").read_text())
    until(lambda: review_versions(walk, 20)["v2"] > 0, timeout=60)
    # one new connection per request through the client's capture: a transport error (status 0) was seen once
    # in 1,000 on an idle machine, cause not found yet; at most 5 are tolerated and the split is judged on the
    # answers (at least 1,000)
    seen = review_versions(walk, 1005)
    errors = seen.pop("HTTP 0", 0)
    assert errors <= 5, (errors, seen)
    seed_checks.canary_80_20(seen)


def test_end_user_jason_ab(walk: Walk) -> None:
    walk.apply((SEED / "reviews-dr.yaml").read_text())
    walk.apply((SEED / "reviews-jasonv3.yaml").read_text())
    jason = {"end-user": "jason"}
    until(lambda: seed_checks.only(review_versions(walk, 5, jason), "v3", 5), timeout=60)
    seed_checks.only(review_versions(walk, 10, jason), "v3", 10)
    seed_checks.only(review_versions(walk, 10, {"end-user": "mary"}), "v2", 10)
    seed_checks.only(review_versions(walk, 10), "v2", 10)


def test_load_balancing_round_robin(walk: Walk) -> None:
    walk.kubectl("delete", "-n", NS, "virtualservice", "reviews", "--ignore-not-found")
    walk.apply((SEED / "reviews-dr-random.yaml").read_text().replace("RANDOM", "ROUND_ROBIN"))

    def rr() -> None:
        order = [json.loads(b)["podname"].split("-")[1]
                 for _, b, _, _ in pod_requests(walk.netns(NS, "productpage"), REVIEWS, 9)]
        seed_checks.round_robin(order)
    until(rr, timeout=60)


def test_circuit_breaking(walk: Walk) -> None:
    # maxConnections 3, pending 1, outlier detection; the seed's 3 min ejection shortened to 1 s (as the delay
    # step shortens its 5 s delay): a stray upstream 5xx under the burst (seen about once in ten walks) ejects
    # ratings, and the next burst after the un-ejection (at the DR's 10 s interval) must still show overflow
    walk.apply((SEED / "ratings-dr.yaml").read_text().replace("baseEjectionTime: 3m", "baseEjectionTime: 1s"))
    (page,) = walk.pods(NS, "app=productpage")
    netns = walk.netns(NS, "productpage")
    ratings = f"outbound|9080||ratings.{NS}.svc.cluster.local"

    def pushed() -> bool:   # the limits are in productpage's config before any load is sent: a 5xx met while
        # waiting would eject ratings (consecutive5xxErrors: 1)
        for dump in walk.istiod.api_get_all(f"/debug/config_dump?proxyID={page['metadata']['name']}"):
            c = {x["name"]: x for x in dump.get("CDS") or []}.get(ratings) or {}
            limits = (c.get("circuitBreakers") or {}).get("thresholds", [])
            if any(t.get("maxConnections") == 3 for t in limits):
                return True
        return False
    wait_for(pushed, timeout=60, what="the ratings DestinationRule in productpage's clusters")
    codes, _, summary = pod_load(netns, RATINGS, concurrency=1, total=20)    # the seed's first run
    assert codes == {200: 20}, summary

    def broken() -> None:
        codes, overflows, summary = pod_load(netns, RATINGS, concurrency=20, total=20)
        assert "(UH)" not in summary, f"ratings was ejected (a 5xx met outlier detection): {summary}"
        seed_checks.circuit_broken(codes, overflows, summary)
    until(broken, timeout=45, interval=1.0)


def test_delay_and_abort(walk: Walk) -> None:
    netns = walk.netns(NS, "productpage")
    walk.apply((SEED / "details-delay.yaml").read_text().replace("fixedDelay: 5s", "fixedDelay: 1s"))

    def delayed() -> None:
        ((status, _, _, elapsed),) = pod_requests(netns, DETAILS)
        seed_checks.delayed(status, elapsed, 1.0)
    until(delayed, timeout=60)
    walk.apply((SEED / "details-abort.yaml").read_text())

    def aborted() -> None:
        ((status, body, _, _),) = pod_requests(netns, DETAILS)
        seed_checks.aborted(status, body)
    until(aborted, timeout=60)


DEMO_APPS = (("order", "demo-order", 80, 8080), ("demo-receive", "demo-receive", 8080, 8080),
             ("demo-ui", "demo-ui", 80, 8080), ("handler", "demo-handler", 80, 8080))


def _demo_manifests() -> str:
    docs: list[Any] = []
    for svc, app, port, target in DEMO_APPS:
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc},
                     "spec": {"selector": {"app": app},
                              "ports": [{"name": "http", "port": port, "targetPort": target}]}})
        for v in (("v1", "v2") if svc == "handler" else ("v1",)):
            labels = {"app": app, "version": v}
            docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"{app}-{v}"},
                         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                                  "template": {"metadata": {"labels": labels},
                                               "spec": {"terminationGracePeriodSeconds": 2, "containers": [
                                                   echo_app_container(svc, v, target)]}}}})
    return yaml.safe_dump_all(docs)


def test_section5_converted_ingress_north_south_and_east_west(walk: Walk) -> None:
    walk.kubectl("create", "namespace", DEMO)
    walk.kubectl("label", "namespace", DEMO, "istio-injection=enabled")
    apps = _demo_manifests()
    walk.apply(apps, ns=DEMO)
    r = subprocess.run([MIZZEN, "convert", "ingress", "-f", str(INGRESSES)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    walk.apply(r.stdout, ns=DEMO)
    _wait_deployments(walk, DEMO, (*(f"{app}-v1" for _, app, _, _ in DEMO_APPS), "demo-handler-v2"))
    host = {"Host": "demo.test.com"}

    def routed() -> None:
        got = walk.gateway("/orders/7", host)
        assert got.status_code == 200 and got.json()["service"] == "order", got.text
    until(routed, timeout=60)
    for path, service, seen in (("/receiveapi/messages?x=1", "demo-receive", "/messages?x=1"),
                                ("/index.html", "demo-ui", "/index.html")):
        got = walk.gateway(path, host)
        assert got.status_code == 200, got.text
        assert (got.json()["service"], got.json()["path"]) == (service, seen), got.text
    assert walk.gateway("/orders", {"Host": "nope.test.com"}).status_code == 404

    # east-west (seed 5.3): order -> handler, subset v1 only
    walk.apply((SEED / "demo-handler-dr.yaml").read_text(), ns=DEMO)
    netns = walk.netns(DEMO, "demo-order")

    def only_v1() -> None:
        answers = pod_requests(netns, "http://handler/api/handle", 6)
        assert [(s, json.loads(b)["version"]) for s, b, _, _ in answers] == [(200, "v1")] * 6, answers
    until(only_v1, timeout=60)


INVALID_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad-reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}, weight: 200}]}]
"""


def test_invalid_virtual_service_is_refused(walk: Walk, tmp_path: Path) -> None:
    def fail_closed() -> bool:
        (hook,) = walk.json("get", "validatingwebhookconfiguration", DEFAULT_VALIDATOR_NAME)["webhooks"]
        return hook["failurePolicy"] == "Fail" and "caBundle" in hook["clientConfig"]
    wait_for(fail_closed, timeout=30, what="the validator patched (caBundle, failurePolicy Fail)")
    # what `mizzen validate` says about it, minus its file:line prefix
    (tmp_path / "bad.yaml").write_text(INVALID_VS)
    v = subprocess.run([MIZZEN, "validate", "-n", NS, "-f", str(tmp_path / "bad.yaml")], capture_output=True,
                       text=True, timeout=60)
    lines = [ln.split(": ", 1)[1] for ln in (v.stdout + v.stderr).splitlines()
             if ln.startswith(str(tmp_path / "bad.yaml"))]
    assert v.returncode == 1 and lines, v.stdout + v.stderr
    kubectl = [str(walk.cluster.bin / "kubectl"), "--kubeconfig", str(walk.cluster.kubeconfig)]
    r = subprocess.run([*kubectl, "apply", "-n", NS, "-f", "-"], input=INVALID_VS, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0, r.stdout
    assert 'admission webhook "validation.istio.io" denied the request' in r.stderr, r.stderr
    for line in lines:
        assert line in r.stderr, (line, r.stderr)
    assert "bad-reviews" not in walk.kubectl("get", "virtualservices", "-n", NS, "-o", "name")


def test_kill_the_leader(walk: Walk) -> None:
    """Last: the process of the istiod pod holding both Leases is killed -9 (the node agent restarts it, as a
    kubelet would). A namespace created after the kill gets istio-ca-root-cert (the same root) within the
    election's worst case, 1.6 Lease durations (the other replica, trying every TTL/4 plus up to 20 %
    jitter, first sees the last renewal up to one such period after it was written, and takes over at its
    first try a whole TTL after that sight; the restarted one may take its own Lease back sooner); the
    proxies keep their config all along and take a change afterwards."""
    w = walk
    names = {r.name for r in w.istiod.runs()}
    leader = _holder(w, NAMESPACE_CONTROLLER)
    assert leader in names and _holder(w, VALIDATION_CONTROLLER) == leader, (leader, names)
    root = w.json("get", "configmap", "-n", NS, CONFIGMAP)["data"][DATA_KEY]
    walk.apply((SEED / "bookinfo-gateway.yaml").read_text())     # the gateway route used below
    walk.apply((SEED / "bookinfo-vs-redirect-rewrite.yaml").read_text())
    until(lambda: seed_checks.redirected(*_yunwei(w)), timeout=60)
    page_netns = w.netns(NS, "productpage")
    # reviews answers 200 whatever the earlier steps left of ratings (an ejection by the circuit-breaking DR)
    assert [x[0] for x in pod_requests(page_netns, REVIEWS, 3)] == [200] * 3

    pid = w.istiod.kill(leader)
    killed = time.monotonic()
    w.kubectl("create", "namespace", "walk-after-failover")
    try:
        def published() -> bool:
            seed_checks.redirected(*_yunwei(w))                  # the gateway keeps its config throughout
            try:
                cm = w.json("get", "configmap", "-n", "walk-after-failover", CONFIGMAP)
            except RuntimeError:
                return False
            return bool(cm["data"][DATA_KEY] == root)
        wait_for(published, timeout=3 * LEASE_TTL_S, what="istio-ca-root-cert in the new namespace")
        took = time.monotonic() - killed
        holder = _holder(w, NAMESPACE_CONTROLLER)
        print(f"failover: istio-ca-root-cert in a new namespace {took:.1f} s after kill -9 of the leader pod "
              f"{leader}'s process (Lease duration {LEASE_TTL_S} s); the Lease now held by {holder}")
        # the last renewal up to TTL/4 before the kill, seen up to 1.2 x TTL/4 later, the takeover up to
        # 1.2 x TTL/4 after a whole TTL from that sight: 1.6 TTL; + 2 s: the namespace controller starting on
        # the new leader and the killed pod's container restarting beside it on two shared cores
        assert took <= LEASE_TTL_S * 1.6 + 2.0, took
        assert holder in names, (holder, names)
        assert [x[0] for x in pod_requests(page_netns, REVIEWS, 3)] == [200] * 3   # east-west too
        for _ in range(10):
            seed_checks.redirected(*_yunwei(w))
            time.sleep(0.2)
    finally:
        w.kubectl("delete", "namespace", "walk-after-failover", "--wait=false")
    # the killed pod's container restarted by the node agent; the proxies take a change again
    restarted = w.istiod.run(leader).containers["discovery"]
    wait_for(lambda: restarted.proc is not None and restarted.proc.pid != pid and restarted.ready, timeout=60,
             what=f"{leader}'s discovery container restarted and ready")
    assert restarted.restart_count >= 1
    w.apply((SEED / "bookinfo-gateway.yaml").read_text().replace("bookinfo.kubeasy.com", "after.example.com"))

    def moved() -> None:
        assert w.gateway("/productpage", {"Host": "after.example.com"}).status_code == 200
    until(moved, timeout=60)


def _yunwei(w: Walk) -> tuple[int, str | None]:
    r = w.gateway("/yunwei", SEED_HOST)
    return r.status_code, r.headers.get("location")
