"""The node agent (tools/kube/nodeagent.py) against the real cluster: it registers a Ready Node with its
topology labels and podCIDR and renews its Lease; the real scheduler binds a Deployment's pods to it; it runs
them as processes in their own network namespaces (init container first, env fieldRefs, ConfigMap/Secret/
downwardAPI/projected-token/emptyDir volumes mapped to host paths), probes them and writes their status, so
the real controller-manager's EndpointSlice lists both pod IPs as ready; a pod reached from the host over
its IP answers; a deleted pod is stopped and replaced and the slice follows; stopping leaves nothing.
kube-proxy in pods' namespaces serves ClusterIPs, in injected pods behind Istio's capture; preStop hooks run
before SIGTERM within the grace period."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_harness import UNAVAILABLE, namespace_ready, nodeagent, wait_for

pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")

NS = "nodeagent"
# The init container writes the page (the pod's name from a fieldRef env var, the ConfigMap's greeting)
# into the emptyDir; the server serves that directory. Paths are the pod's mountPaths, mapped by the agent.
INIT = ("import os, shutil, sys; "
        "open(sys.argv[1], 'w').write(os.environ['MY_POD'] + ' ' + os.environ['MY_IP']); "
        "shutil.copy(sys.argv[2], sys.argv[3])")
MANIFESTS = textwrap.dedent(f"""\
    apiVersion: v1
    kind: ConfigMap
    metadata: {{name: web-config, namespace: {NS}}}
    data: {{greeting: hello-from-configmap}}
    ---
    apiVersion: v1
    kind: Secret
    metadata: {{name: web-secret, namespace: {NS}}}
    stringData: {{password: s3cret}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: web, namespace: {NS}}}
    spec:
      replicas: 2
      selector: {{matchLabels: {{app: web}}}}
      template:
        metadata: {{labels: {{app: web, version: v1}}}}
        spec:
          terminationGracePeriodSeconds: 5
          initContainers:
          - name: init
            image: example/init
            command: ["{sys.executable}", "-c", "{INIT}"]
            args: ["/data/index.html", "/etc/cfg/greeting", "/data/greeting"]
            env:
            - {{name: MY_POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
            - {{name: MY_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
            volumeMounts:
            - {{name: data, mountPath: /data}}
            - {{name: cfg, mountPath: /etc/cfg}}
          containers:
          - name: web
            image: example/web
            command: ["{sys.executable}", "-m", "http.server", "8080", "--directory", "/data"]
            ports: [{{containerPort: 8080, name: http}}]
            env:
            - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: web-secret, key: password}}}}}}
            readinessProbe:
              httpGet: {{path: /index.html, port: http}}
              periodSeconds: 1
            livenessProbe:
              tcpSocket: {{port: 8080}}
              periodSeconds: 2
            volumeMounts:
            - {{name: data, mountPath: /data}}
            - {{name: istio-token, mountPath: /var/run/secrets/tokens}}
            - {{name: podinfo, mountPath: /etc/podinfo}}
            - {{name: sec, mountPath: /etc/sec}}
          volumes:
          - {{name: data, emptyDir: {{}}}}
          - {{name: cfg, configMap: {{name: web-config}}}}
          - {{name: sec, secret: {{secretName: web-secret}}}}
          - name: podinfo
            downwardAPI:
              items:
              - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
              - {{path: namespace, fieldRef: {{fieldPath: metadata.namespace}}}}
          - name: istio-token
            projected:
              sources:
              - serviceAccountToken: {{audience: istio-ca, expirationSeconds: 43200, path: istio-token}}
    ---
    apiVersion: v1
    kind: Service
    metadata: {{name: web, namespace: {NS}}}
    spec:
      selector: {{app: web}}
      ports: [{{name: http, port: 80, targetPort: 8080}}]
    """)


@pytest.fixture
def node(kube_cluster: Any) -> Iterator[Any]:
    agent = nodeagent.NodeAgent(kube_cluster, "mizzen-node-0", region="us-east1", zone="us-east1-b",
                                lease_renew_s=1.0)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


def _json(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json"))


def _ready_slice_ips(cluster: Any, ns: str = NS) -> set[str]:
    ips: set[str] = set()
    slices = _json(cluster, "get", "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=web")
    for s in slices["items"]:
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready"):
                ips.update(ep["addresses"])
    return ips


def _pods(cluster: Any) -> list[Any]:
    return [p for p in _json(cluster, "get", "pods", "-n", NS, "-l", "app=web")["items"]
            if not p["metadata"].get("deletionTimestamp")]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:   # a pod IP in the test cluster
        return str(r.read().decode())


def test_node_registers_ready_with_lease(kube_cluster: Any, node: Any) -> None:
    n = _json(kube_cluster, "get", "node", "mizzen-node-0")
    labels = n["metadata"]["labels"]
    assert labels["topology.kubernetes.io/region"] == "us-east1"
    assert labels["topology.kubernetes.io/zone"] == "us-east1-b"
    cidr = ipaddress.ip_network(n["spec"]["podCIDR"])
    assert cidr == ipaddress.ip_network(f"10.244.{228 + kube_cluster.net.addr.slot}.0/24")
    ready = {c["type"]: c["status"] for c in n["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert n["status"]["allocatable"]["pods"] == "110"
    lease = _json(kube_cluster, "get", "lease", "-n", "kube-node-lease", "mizzen-node-0")
    assert lease["spec"]["holderIdentity"] == "mizzen-node-0"
    first = lease["spec"]["renewTime"]
    wait_for(lambda: _json(kube_cluster, "get", "lease", "-n", "kube-node-lease", "mizzen-node-0")
             ["spec"]["renewTime"] != first, timeout=15, what="the Lease renewed")


def test_deployment_runs_on_the_node_and_drives_endpointslices(kube_cluster: Any, node: Any) -> None:
    c = kube_cluster
    c.kubectl("create", "namespace", NS)
    try:
        namespace_ready(c, NS)
        c.kubectl("apply", "-f", "-", stdin=MANIFESTS)
        ips = wait_for(lambda: (s if len(s := _ready_slice_ips(c)) == 2 else None), timeout=90,
                       what="EndpointSlice with both pod IPs ready")
        pods = _pods(c)
        assert {p["status"]["podIP"] for p in pods} == ips
        cidr = ipaddress.ip_network(f"10.244.{228 + c.net.addr.slot}.0/24")
        for p in pods:
            st = p["status"]
            assert p["spec"]["nodeName"] == "mizzen-node-0"   # bound by the real scheduler
            assert st["phase"] == "Running" and ipaddress.ip_address(st["podIP"]) in cidr
            assert st["hostIP"] == node.host_ip and st["podIPs"] == [{"ip": st["podIP"]}]
            conds = {x["type"]: x["status"] for x in st["conditions"]}
            assert conds["Ready"] == conds["ContainersReady"] == conds["Initialized"] == "True"
            assert conds["PodScheduled"] == "True"
            (cs,) = st["containerStatuses"]
            assert cs["ready"] and "running" in cs["state"] and cs["restartCount"] == 0
            assert st["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
            # the init container ran first, with downward-API env; the ConfigMap reached it via /etc/cfg
            name = p["metadata"]["name"]
            assert _get(f"http://{st['podIP']}:8080/index.html") == f"{name} {st['podIP']}"
            assert _get(f"http://{st['podIP']}:8080/greeting") == "hello-from-configmap"

        run = node.pod_by_name(NS, pods[0]["metadata"]["name"])
        vols = run.dir / "volumes"
        token = (vols / "istio-token" / "istio-token").read_text()
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        assert claims["aud"] == ["istio-ca"]
        assert claims["kubernetes.io"]["pod"]["name"] == run.name   # bound to the pod
        assert oct((vols / "istio-token" / "istio-token").stat().st_mode & 0o777) == "0o600"
        assert (vols / "sec" / "password").read_text() == "s3cret"
        assert oct((vols / "sec" / "password").stat().st_mode & 0o777) == "0o600"
        assert 'app="web"' in (vols / "podinfo" / "labels").read_text()
        assert (vols / "podinfo" / "namespace").read_text() == NS
        web = run.containers["web"].proc
        env = Path(f"/proc/{web.pid}/environ").read_bytes().split(b"\0")
        assert b"PASSWORD=s3cret" in env
        mounts = json.loads(next(e for e in env if e.startswith(b"MIZZEN_MOUNTS="))[14:])
        assert mounts["/data"] == str(vols / "data")
        # the process really is in the pod's namespace (its own eth0 with the pod IP)
        assert os.readlink(f"/proc/{web.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        out = subprocess.run(["ip", "-n", run.netns, "-o", "addr", "show", "eth0"], capture_output=True,
                             text=True, check=True).stdout
        assert f"{run.ip}/24" in out

        # delete one pod: it is stopped (namespace, veth, process gone), the ReplicaSet replaces it and the
        # slice follows
        victim = pods[0]
        old_netns, old_veth, old_pid = run.netns, run.veth, web.pid
        c.kubectl("delete", "pod", "-n", NS, victim["metadata"]["name"], "--wait=true", timeout=60)
        assert not Path(f"/run/netns/{old_netns}").exists()
        assert old_veth not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert not _alive(old_pid)
        def settled() -> set[str] | None:
            now = _pods(c)
            ips = _ready_slice_ips(c)
            replaced = len(now) == 2 and victim["metadata"]["uid"] not in {p["metadata"]["uid"] for p in now}
            return ips if replaced and ips == {p["status"].get("podIP") for p in now} else None

        new_ips = wait_for(settled, timeout=90, what="the slice listing the replacement pod")
        names = {p["metadata"]["name"] for p in _pods(c)}
        assert victim["metadata"]["name"] not in names and len(names) == 2
        assert new_ips == {p["status"]["podIP"] for p in _pods(c)}
    finally:
        c.kubectl("delete", "namespace", NS, "--wait=false")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_stop_leaves_nothing(kube_cluster: Any) -> None:
    c = kube_cluster
    ns = "nodeagent-stop"
    agent = nodeagent.NodeAgent(c, "mizzen-node-stop", lease_renew_s=1.0)
    agent.start()
    try:
        c.kubectl("create", "namespace", ns)
        namespace_ready(c, ns)
        c.kubectl("run", "sleeper", "-n", ns, "--image=example/sleep", "--restart=Never",
                  "--overrides", json.dumps({"spec": {"nodeName": "mizzen-node-stop"}}),
                  "--command", "--", sys.executable, "-c", "import time; time.sleep(600)")
        run = wait_for(lambda: (r := agent.pod_by_name(ns, "sleeper")) and r.containers.get("sleeper")
                       and r.containers["sleeper"].proc and r, timeout=60, what="the pod's process")
        pid, netns, veth, workdir = run.containers["sleeper"].proc.pid, run.netns, run.veth, agent.workdir
        assert _alive(pid)
    finally:
        agent.stop()
    try:
        assert not _alive(pid)
        assert not Path(f"/run/netns/{netns}").exists()
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert veth not in links
        addrs = subprocess.run(["ip", "-o", "addr", "show", "dev", f"{c.net.tag}br"], capture_output=True,
                               text=True).stdout
        assert agent.host_ip not in addrs
        assert not workdir.exists()
        nodes = _json(c, "get", "nodes")["items"]
        assert "mizzen-node-stop" not in {n["metadata"]["name"] for n in nodes}
    finally:
        c.kubectl("delete", "namespace", ns, "--wait=false")


TOUCH = "import pathlib, sys, time; [pathlib.Path(p).touch() for p in sys.argv[1:]]; time.sleep(600)"
EXISTS = "import os, sys; sys.exit(not os.path.exists(sys.argv[1]))"
PROBED = textwrap.dedent(f"""\
    apiVersion: v1
    kind: Pod
    metadata: {{name: probed, namespace: {{ns}}, labels: {{app: probed}}}}
    spec:
      containers:
      - name: app
        image: example/app
        # marks itself healthy and ready (files in its emptyDir), then serves
        command: ["{sys.executable}", "-c", "{TOUCH}"]
        args: ["/state/alive", "/state/ready"]
        readinessProbe:
          exec: {{command: ["{sys.executable}", "-c", "{EXISTS}", "/state/ready"]}}
          periodSeconds: 1
          failureThreshold: 1
        livenessProbe:
          exec: {{command: ["{sys.executable}", "-c", "{EXISTS}", "/state/alive"]}}
          periodSeconds: 1
          failureThreshold: 2
        volumeMounts: [{{name: state, mountPath: /state}}]
      volumes: [{{name: state, emptyDir: {{}}}}]
      terminationGracePeriodSeconds: 2
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: details, namespace: {{ns}}, labels: {{app: details}}}}
    spec:
      containers:
      - name: details
        image: docker.io/istio/examples-bookinfo-details-v1:1.20.3
        ports: [{{containerPort: 9080}}]
        readinessProbe:
          tcpSocket: {{port: 9080}}
          periodSeconds: 1
    """)


def _container_status(cluster: Any, ns: str, pod: str) -> Any:
    st = _json(cluster, "get", "pod", "-n", ns, pod)["status"]
    return (st.get("containerStatuses") or [None])[0]


def test_probes_restarts_and_bookinfo_images(kube_cluster: Any, node: Any) -> None:
    c, ns = kube_cluster, "nodeagent-probes"
    c.kubectl("create", "namespace", ns)
    try:
        namespace_ready(c, ns)
        c.kubectl("apply", "-f", "-", stdin=PROBED.replace("{ns}", ns))
        wait_for(lambda: (s := _container_status(c, ns, "probed")) and s["ready"], timeout=60,
                 what="probed ready (exec readiness probe)")
        state = node.pod_by_name(ns, "probed").dir / "volumes" / "state"
        (state / "ready").unlink()   # readiness fails: not ready, but not restarted
        wait_for(lambda: not _container_status(c, ns, "probed")["ready"], timeout=30, what="probed not ready")
        pod = _json(c, "get", "pod", "-n", ns, "probed")
        conds = {x["type"]: x["status"] for x in pod["status"]["conditions"]}
        assert conds["Ready"] == "False" and _container_status(c, ns, "probed")["restartCount"] == 0
        (state / "alive").unlink()   # liveness fails: killed and restarted; it marks itself alive+ready again
        st = wait_for(lambda: (s := _container_status(c, ns, "probed")) and s["restartCount"] == 1
                      and s["ready"] and s, timeout=60, what="probed restarted and ready again")
        assert "running" in st["state"] and "terminated" in st["lastState"]

        # an Istio Bookinfo image without a command runs our app, listening on the pod IP
        wait_for(lambda: (s := _container_status(c, ns, "details")) and s["ready"], timeout=60,
                 what="details ready")
        ip = _json(c, "get", "pod", "-n", ns, "details")["status"]["podIP"]
        assert json.loads(_get(f"http://{ip}:9080/details/0"))["id"] == 0
    finally:
        c.kubectl("delete", "namespace", ns, "--wait=false")


# An in-cluster client: the API server from KUBERNETES_SERVICE_HOST/PORT, with the pod's projected
# service-account token and CA (the kube-api-access volume; its mountPath is passed as an argument).
IN_CLUSTER = ("import os, ssl, sys, urllib.request; d = sys.argv[1]; "
              "ctx = ssl.create_default_context(cafile=d + '/ca.crt'); "
              "tok = open(d + '/token').read(); ns = open(d + '/namespace').read(); "
              "url = 'https://%s:%s/api/v1/namespaces/%s/pods' % (os.environ['KUBERNETES_SERVICE_HOST'], "
              "os.environ['KUBERNETES_SERVICE_PORT'], ns); "
              "req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + tok}); "
              "print(urllib.request.urlopen(req, context=ctx, timeout=10).status)")


def test_pod_reaches_the_api_server_in_cluster(kube_cluster: Any, node: Any) -> None:
    c, ns = kube_cluster, "nodeagent-incluster"
    c.kubectl("create", "namespace", ns)
    try:
        namespace_ready(c, ns)
        # the default SA may read pods here, so a 200 proves token, CA and route; 403 would mean RBAC
        c.kubectl("create", "rolebinding", "view", "-n", ns, "--clusterrole=view",
                  f"--serviceaccount={ns}:default")
        sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
        c.kubectl("run", "client", "-n", ns, "--image=example/client", "--restart=Never",
                  "--command", "--", sys.executable, "-c", IN_CLUSTER, sa_dir)
        phase = wait_for(lambda: _json(c, "get", "pod", "-n", ns, "client")["status"].get("phase")
                         in ("Succeeded", "Failed") and
                         _json(c, "get", "pod", "-n", ns, "client")["status"]["phase"], timeout=60,
                         what="the client pod finished")
        run = node.pod_by_name(ns, "client")
        out = (run.dir / "logs" / "client.log").read_text() if run else ""
        assert phase == "Succeeded", out
        assert out.strip() == "200"
        (cs,) = _json(c, "get", "pod", "-n", ns, "client")["status"]["containerStatuses"]
        assert cs["state"]["terminated"] | {"exitCode": 0, "reason": "Completed"} == cs["state"]["terminated"]
    finally:
        c.kubectl("delete", "namespace", ns, "--wait=false")


# Retries a ClusterIP until kube-proxy has programmed it (bounded: 120 tries, 60 s), prints the answer.
CLUSTER_IP_CLIENT = ("import sys, time, urllib.request\n"
                     "for _ in range(120):\n"
                     "    try:\n"
                     "        print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()); break\n"
                     "    except OSError as e:\n"
                     "        print(e, file=sys.stderr); time.sleep(0.5)\n"
                     "else:\n"
                     "    sys.exit(1)\n")


def _host_nat_rules() -> str:
    out = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith("#"))


def test_kube_proxy_in_pod_namespaces_serves_cluster_ips(kube_cluster: Any) -> None:
    c, ns = kube_cluster, "nodeagent-proxy"
    host_rules = _host_nat_rules()
    agent = nodeagent.NodeAgent(c, "mizzen-node-proxy", kube_proxy=True)
    agent.start()
    try:
        c.kubectl("create", "namespace", ns)
        namespace_ready(c, ns)
        c.kubectl("run", "server", "-n", ns, "--image=example/server", "--labels=app=server", "--port=8080",
                  "--command", "--", sys.executable, "-m", "http.server", "8080")
        c.kubectl("expose", "pod", "server", "-n", ns, "--port=80", "--target-port=8080")
        cluster_ip = _json(c, "get", "svc", "server", "-n", ns)["spec"]["clusterIP"]
        assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(c.net.addr.service_cidr)
        c.kubectl("run", "client", "-n", ns, "--image=example/client", "--restart=Never", "--command", "--",
                  sys.executable, "-c", CLUSTER_IP_CLIENT, "http://server/")   # by name: the pod's hosts
        phase = wait_for(lambda: (p := _json(c, "get", "pod", "-n", ns, "client")["status"].get("phase"))
                         in ("Succeeded", "Failed") and p, timeout=90, what="the client pod finished")
        run = agent.pod_by_name(ns, "client")
        out = (run.dir / "logs" / "client.log").read_text() if run else ""
        proxy_log = (run.dir / "logs" / "kube-proxy.log").read_text() if run else ""
        hosts = Path(f"/etc/netns/{run.netns}/hosts").read_text() if run else ""
        if phase != "Succeeded":   # say why: the server pod, its slice, the client's NAT rules
            rules = subprocess.run(["ip", "netns", "exec", run.netns, "iptables-save", "-t", "nat"],
                                   capture_output=True, text=True).stdout if run else ""
            srv = _json(c, "get", "pod", "-n", ns, "server")["status"]
            slices = c.kubectl("get", "endpointslices", "-n", ns, "-o", "yaml")
            pytest.fail(f"{out[-500:]}\n{hosts}\n{srv}\n{slices}\n{rules}\n{proxy_log[-1500:]}")
        assert "Directory listing" in out   # http.server's answer, through the ClusterIP
        rules = subprocess.run(["ip", "netns", "exec", run.netns, "iptables-save", "-t", "nat"],
                               capture_output=True, text=True).stdout
        assert "KUBE-SERVICES" in rules and cluster_ip in rules
        hosts = Path(f"/etc/netns/{run.netns}/hosts").read_text()
        assert f"{cluster_ip}\tserver.{ns}.svc.cluster.local server.{ns}.svc server.{ns} server" in hosts
        netns_etc = Path(f"/etc/netns/{run.netns}")
        assert _host_nat_rules() == host_rules   # nothing in the host's iptables
        proxy_pid = run.kube_proxy.pid
        _injected_pod_reaches_cluster_ips_through_its_capture(c, agent, ns, cluster_ip)
        assert _host_nat_rules() == host_rules
    finally:
        agent.stop()
        c.kubectl("delete", "namespace", ns, "--wait=false")
    assert not _alive(proxy_pid)
    assert not netns_etc.exists()


def test_volumes_follow_configmap_updates_and_tokens_are_refreshed(kube_cluster: Any) -> None:
    c, ns = kube_cluster, "nodeagent-resync"
    agent = nodeagent.NodeAgent(c, "mizzen-node-resync", volume_resync_s=0.5, token_refresh_s=1.0)
    agent.start()
    try:
        c.kubectl("create", "namespace", ns)
        namespace_ready(c, ns)
        c.kubectl("create", "configmap", "cfg", "-n", ns, "--from-literal=mode=one")
        c.kubectl("apply", "-f", "-", stdin=textwrap.dedent(f"""\
            apiVersion: v1
            kind: Pod
            metadata: {{name: reader, namespace: {ns}}}
            spec:
              containers:
              - name: reader
                image: example/reader
                command: ["{sys.executable}", "-c", "import time; time.sleep(600)"]
                volumeMounts:
                - {{name: cfg, mountPath: /etc/cfg}}
                - {{name: tok, mountPath: /var/run/secrets/tokens}}
              volumes:
              - {{name: cfg, configMap: {{name: cfg}}}}
              - name: tok
                projected: {{sources: [{{serviceAccountToken: {{audience: istio-ca, path: istio-token}}}}]}}
            """))
        run = wait_for(lambda: (r := agent.pod_by_name(ns, "reader")) and r.containers.get("reader")
                       and r.containers["reader"].proc and r, timeout=60, what="the reader pod's process")
        cfg = run.dir / "volumes" / "cfg" / "mode"
        token = run.dir / "volumes" / "tok" / "istio-token"
        assert cfg.read_text() == "one"
        first = token.read_text()
        c.kubectl("patch", "configmap", "cfg", "-n", ns, "--type=merge", "-p", '{"data": {"mode": "two"}}')
        wait_for(lambda: cfg.read_text() == "two", timeout=30, what="the ConfigMap update in the volume")
        wait_for(lambda: token.read_text() != first, timeout=30, what="a refreshed token")
        assert oct(token.stat().st_mode & 0o777) == "0o600"
    finally:
        agent.stop()
        c.kubectl("delete", "namespace", ns, "--wait=false")


# The injected pod's stand-in sidecar (uid 1337, like istio-proxy): answers what the capture sends to 15001
# and itself fetches the ClusterIP (only uid 1337 is not captured: it must be DNATed by kube-proxy).
SIDECAR = textwrap.dedent("""\
    import http.server, sys, threading, time, urllib.request
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            b = b"captured by the sidecar"
            self.send_response(200); self.send_header("content-length", str(len(b))); self.end_headers()
            self.wfile.write(b)
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(("0.0.0.0", 15001), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    for _ in range(60):
        try:
            body = urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()
            print("sidecar got:", "Directory listing" in body and "the server" or body[:100], flush=True)
            break
        except OSError as e:
            print(e, flush=True); time.sleep(0.5)
    time.sleep(600)
    """)


def _injected_pod_reaches_cluster_ips_through_its_capture(c: Any, agent: Any, ns: str,
                                                         cluster_ip: str) -> None:
    """An injected pod (``sidecar.istio.io/status``, istio-init's rules): kube-proxy's jumps sit behind
    Istio's in its nat table, so the sidecar's user (1337) reaches the ClusterIP through kube-proxy's DNAT
    while the app's connection to the same ClusterIP is captured to the sidecar's 15001."""
    client = CLUSTER_IP_CLIENT
    c.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "injected", "namespace": ns,
                     "annotations": {"sidecar.istio.io/status": json.dumps({"containers": ["istio-proxy"]})}},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.28.0",
                                     "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337",
                                              "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*",
                                              "-d", "15090,15021,15020"]}],
                 "containers": [
                     {"name": "istio-proxy", "image": "example/sidecar",
                      "command": [sys.executable, "-c", SIDECAR, "http://server/"],
                      "securityContext": {"runAsUser": 1337, "runAsGroup": 1337}},
                     {"name": "app", "image": "example/client",
                      "command": [sys.executable, "-c", client + "import time; time.sleep(600)\n",
                                  "http://server/"]}]}}))

    def logs() -> tuple[str, str]:
        run = agent.pod_by_name(ns, "injected")
        if run is None:
            return "", ""
        return tuple((run.dir / "logs" / f"{n}.log").read_text() if (run.dir / "logs" / f"{n}.log").exists()
                     else "" for n in ("istio-proxy", "app"))   # type: ignore[return-value]

    def why() -> str:
        run = agent.pod_by_name(ns, "injected")
        logs_dir = run.dir / "logs" if run else Path("/nonexistent")
        files = {p.name: p.read_text()[-800:] for p in logs_dir.glob("*.log")} if logs_dir.exists() else {}
        status = _json(c, "get", "pod", "-n", ns, "injected").get("status")
        return f"run error {run and run.error!r}; logs {files}; status {status}"

    try:
        try:
            wait_for(lambda: "sidecar got:" in logs()[0] and "captured" in logs()[1], timeout=60,
                     what=f"the injected pod's two fetches of {cluster_ip}")
        except AssertionError as e:
            raise AssertionError(f"{e}: {why()}") from None
        sidecar, app = logs()
        assert "sidecar got: the server" in sidecar, sidecar      # uid 1337: DNATed to the server pod
        assert "captured by the sidecar" in app, app              # the app: captured before any DNAT
        run = agent.pod_by_name(ns, "injected")
        out = subprocess.run(["ip", "netns", "exec", run.netns, "iptables", "-t", "nat", "-S", "OUTPUT"],
                             capture_output=True, text=True).stdout.splitlines()
        rules = [r for r in out if r.startswith("-A OUTPUT")]
        # Istio's jump first, kube-proxy's once (its "ensure rule" found ours and did not prepend another)
        assert len(rules) == 2 and rules[0].endswith("-j ISTIO_OUTPUT"), out
        assert rules[1] == '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES', out
        assert run.kube_proxy is not None and run.kube_proxy.returncode is None
    finally:
        c.kubectl("delete", "pod", "-n", ns, "injected", "--wait=false")


# Each process appends "<event> <monotonic time>" lines to the file argv[1] (a host path: no mount namespace).
NOTE = "import os, sys, time\ndef note(e): open(sys.argv[1], 'a').write(f'{e} {time.monotonic()}\\n')\n"
WEB_ON_TERM = NOTE + textwrap.dedent("""\
    import http.server, signal
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            note('prestop-http'); self.send_response(200); self.end_headers()
        def log_message(self, *a): pass
    signal.signal(signal.SIGTERM, lambda *a: (note('term-web'), os._exit(0)))
    http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()
    """)
WORKER_ON_TERM = NOTE + textwrap.dedent("""\
    import signal
    signal.signal(signal.SIGTERM, lambda *a: (note('term-' + sys.argv[2]), os._exit(0)))
    while True: time.sleep(1)
    """)
HOOK = NOTE + "time.sleep(float(sys.argv[2])); note(sys.argv[3])\n"


def _hook_pod(ns: str, name: str, events: Path, hook_s: float, grace: int) -> str:
    py = sys.executable
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
        "spec": {"terminationGracePeriodSeconds": grace, "containers": [
            {"name": "web", "image": "example/web", "command": [py, "-c", WEB_ON_TERM, str(events)],
             "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
             "lifecycle": {"preStop": {"httpGet": {"path": "/prestop", "port": 8080}}}},
            {"name": "worker", "image": "example/worker",
             "command": [py, "-c", WORKER_ON_TERM, str(events), "worker"],
             "lifecycle": {"preStop": {"exec": {"command": [py, "-c", HOOK, str(events), str(hook_s),
                                                            "prestop-exec"]}}}}]}})


def test_pre_stop_hooks_run_before_sigterm_within_the_grace_period(kube_cluster: Any, node: Any,
                                                                   tmp_path: Path) -> None:
    """Deleting a pod: each running container's preStop hook (httpGet to the web container, exec of a 1 s
    command in the worker) runs before that container's SIGTERM; a hook longer than the grace period (20 s
    hook, 3 s grace) is cut: the pod is gone within the grace period plus a kubelet's 2 s extension."""
    c, ns = kube_cluster, "nodeagent-hooks"
    c.kubectl("create", "namespace", ns)
    try:
        namespace_ready(c, ns)
        ok, slow = tmp_path / "ok.events", tmp_path / "slow.events"
        c.kubectl("apply", "-f", "-", stdin=_hook_pod(ns, "hooks", ok, 1.0, 10))
        c.kubectl("apply", "-f", "-", stdin=_hook_pod(ns, "slow-hook", slow, 20.0, 3))
        c.kubectl("wait", "--for=condition=Ready", "pod/hooks", "pod/slow-hook", "-n", ns, "--timeout=90s",
                  timeout=100)
        c.kubectl("delete", "pod", "hooks", "slow-hook", "-n", ns, "--wait=false")
        started = time.monotonic()
        wait_for(lambda: node.pod_by_name(ns, "slow-hook") is None, timeout=30, what="slow-hook stopped")
        slow_s = time.monotonic() - started
        wait_for(lambda: node.pod_by_name(ns, "hooks") is None, timeout=30, what="hooks stopped")

        def events(path: Path) -> dict[str, float]:
            return {e: float(t) for e, t in (ln.split() for ln in path.read_text().splitlines())}
        got = events(ok)
        assert set(got) == {"prestop-http", "term-web", "prestop-exec", "term-worker"}, got
        assert got["prestop-http"] < got["term-web"], got
        assert got["prestop-exec"] < got["term-worker"], got        # the 1 s hook finished first
        got = events(slow)
        assert "prestop-exec" not in got and "term-worker" in got, got   # the hook was cut at the grace
        assert slow_s < 3 + 2 + 3, slow_s     # grace + the 2 s extension + the agent's own work
    finally:
        c.kubectl("delete", "namespace", ns, "--wait=false")
