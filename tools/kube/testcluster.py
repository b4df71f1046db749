"""A throwaway, real Kubernetes control plane for Mizzen's tests: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler (built by ``tools/kube/build.sh``) in a network namespace of
their own, reached from the host over a bridge inside 10.244.224.0/19. It owns the cluster's PKI (made
with ``cryptography``: a CA, the API server's serving certificate, client certificates for the admin and
the controllers, the service-account key), its processes (started and stopped by pid, killed with their
parent) and every network object it creates (names start with ``mzk``); ``stop`` removes exactly those,
and nothing is added to the host's iptables.

Addresses (all inside 10.244.0.0/16, clear of tests/netns's 10.244.20-219.x); up to four clusters at once,
each in a slot S (0-3) claimed by creating its bridge ``mzk<S>br``:
  10.244.(224+S).1/24   the host's end (the bridge; nodes of a later harness attach to it)
  10.244.(224+S).2      the control plane's namespace: kube-apiserver on :6443, etcd on its loopback only
  10.244.(240+4S).0/22  the service CIDR (the ``kubernetes`` Service gets its .1)

Run by hand: ``python tools/kube/testcluster.py up`` prints a kubeconfig path and serves until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
SLOTS = 4
PREFIX = 24
API_PORT = 6443


@dataclass(frozen=True)
class Addresses:
    """One cluster slot's addresses."""
    slot: int

    @property
    def host_ip(self) -> str:
        return f"10.244.{224 + self.slot}.1"

    @property
    def cp_ip(self) -> str:
        return f"10.244.{224 + self.slot}.2"

    @property
    def service_cidr(self) -> str:
        return f"10.244.{240 + 4 * self.slot}.0/22"

    @property
    def kubernetes_svc_ip(self) -> str:
        return f"10.244.{240 + 4 * self.slot}.1"

    @property
    def server(self) -> str:
        return f"https://{self.cp_ip}:{API_PORT}"


def bin_dir(build: bool = True) -> Path:
    """The cached binaries' directory; builds them first when ``build`` (a cold build takes long)."""
    args = [str(HERE / "build.sh")] + ([] if build else ["--check"])
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        why = r.stderr.strip() or "run tools/kube/build.sh"
        raise RuntimeError(f"Kubernetes binaries are not built: {why}")
    return Path(r.stdout.strip().splitlines()[-1])


def unavailable_reason() -> str | None:
    """Why a cluster cannot start here (None: it can): root for netns/bridges, ``ip``, built binaries."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and a bridge)"
    if shutil.which("ip") is None:
        return "`ip` is not installed (apt-get install iproute2)"
    try:
        bin_dir(build=False)
    except RuntimeError as e:
        return str(e)
    return None


# ---------------------------------------------------------------------------------------------- PKI

def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class Pki:
    """The cluster's CA and the certificates signed by it, written under ``root``."""
    root: Path
    server: str
    ca_key: ec.EllipticCurvePrivateKey = field(init=False)
    ca_cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(_name("mizzen-test-cluster-ca"))
            .issuer_name(_name("mizzen-test-cluster-ca")).public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        _write_key(self.root / "ca.key", self.ca_key)
        _write_cert(self.root / "ca.crt", self.ca_cert)
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(self.root / "sa.key", sa)
        (self.root / "sa.pub").write_bytes(sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def issue(self, name: str, cn: str, org: str | None = None, *, server: bool = False,
              dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> tuple[Path, Path]:
        """A leaf certificate (client, or server with SANs) and its key: ``(cert path, key path)``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        b = (x509.CertificateBuilder().subject_name(_name(cn, org)).issuer_name(self.ca_cert.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(
                 [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                 critical=False))
        if dns or ips:
            sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self.ca_key, hashes.SHA256())
        crt, keyp = self.root / f"{name}.crt", self.root / f"{name}.key"
        _write_cert(crt, cert)
        _write_key(keyp, key)
        return crt, keyp

    def kubeconfig(self, name: str, cn: str, org: str | None = None) -> Path:
        """A kubeconfig for ``cn`` (client-certificate auth) pointing at the API server."""
        crt, key = self.issue(name, cn, org)
        path = self.root / f"{name}.kubeconfig"
        text = (
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: mizzen-test\n  cluster:\n    server: {self.server}\n"
            f"    certificate-authority: {self.root / 'ca.crt'}\n"
            f"users:\n- name: {name}\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n"
            f"contexts:\n- name: {name}\n  context:\n    cluster: mizzen-test\n    user: {name}\n"
            f"current-context: {name}\n"
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path


# ------------------------------------------------------------------------------------------ network

def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


@dataclass
class Network:
    """A bridge on the host and the control plane's namespace joined to it by a veth, in the first free
    slot."""
    tag_prefix: str = "mzk"
    addr: Addresses = field(default_factory=lambda: Addresses(0))
    created: list[tuple[str, str]] = field(default_factory=list)   # ("link"|"netns", name), in creation order

    @property
    def tag(self) -> str:
        return f"{self.tag_prefix}{self.addr.slot}"

    @property
    def netns(self) -> str:
        return f"{self.tag}-cp"

    def up(self, slot_wait_s: float = float(os.environ.get("MIZZEN_KUBE_SLOT_WAIT", "600"))) -> None:
        # creating the bridge claims a slot (atomic: it fails if it exists); when every slot is taken (other
        # test runs on this machine), wait for one to be freed, bounded by ``slot_wait_s``
        deadline = time.monotonic() + slot_wait_s
        while True:
            for slot in range(SLOTS):
                self.addr = Addresses(slot)
                r = subprocess.run(["ip", "link", "add", f"{self.tag}br", "type", "bridge"],
                                   capture_output=True, text=True, timeout=10)
                if r.returncode == 0:
                    break
            else:
                if time.monotonic() < deadline:
                    time.sleep(2)
                    continue
                raise RuntimeError(f"all {SLOTS} test-cluster slots are taken (bridges "
                                   f"{self.tag_prefix}0br..) for {slot_wait_s:.0f} s: stop the other "
                                   "clusters or remove leftovers with `ip link del`")
            break
        br, host_end, ns_end = f"{self.tag}br", f"{self.tag}cph", f"{self.tag}cpn"
        self.created.append(("link", br))
        if Path(f"/run/netns/{self.netns}").exists():   # a leftover of a killed run in this slot
            _ip("netns", "del", self.netns)
        _ip("addr", "add", f"{self.addr.host_ip}/{PREFIX}", "dev", br)
        _ip("link", "set", br, "up")
        _ip("netns", "add", self.netns)
        self.created.append(("netns", self.netns))
        _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        self.created.append(("link", host_end))
        _ip("link", "set", host_end, "master", br)
        _ip("link", "set", host_end, "up")
        _ip("link", "set", ns_end, "netns", self.netns)
        _ip("-n", self.netns, "addr", "add", f"{self.addr.cp_ip}/{PREFIX}", "dev", ns_end)
        _ip("-n", self.netns, "link", "set", ns_end, "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")
        _ip("-n", self.netns, "route", "add", "default", "via", self.addr.host_ip)

    def down(self) -> None:
        for kind, name in reversed(self.created):
            with contextlib.suppress(RuntimeError):
                _ip(kind, "del", name)
        self.created.clear()


# ---------------------------------------------------------------------------------------- processes

def _die_with_parent() -> None:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG


# clients before the API server, the API server before etcd, whatever order they were (re)started in
# (respawn() puts a component last): an API server stopped while the controller-manager still watches it
# does not exit on SIGTERM (it was killed 10 s later)
STOP_ORDER = ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


def _stop_rank(name: str) -> int:
    return STOP_ORDER.index(name) if name in STOP_ORDER else -1


class TestCluster:
    """``with TestCluster() as c:`` a running control plane; ``c.kubeconfig`` is an admin kubeconfig."""

    __test__ = False   # not a pytest class

    def __init__(self, workdir: Path | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="mizzen-kube-"))
        self.bin = bin_dir(build=False)
        self.net = Network()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._argv: dict[str, list[str]] = {}
        self.pki: Pki | None = None
        self.kubeconfig = self.workdir / "pki" / "admin.kubeconfig"

    # -- lifecycle
    def start(self, timeout: float = 120.0) -> None:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def server(self) -> str:
        return self.net.addr.server

    def _start(self, timeout: float) -> None:
        self.net.up()
        a = self.net.addr
        self.pki = pki = Pki(self.workdir / "pki", a.server)
        pki.issue("apiserver", "kube-apiserver", server=True,
                  dns=("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local", "localhost"),
                  ips=(a.cp_ip, a.kubernetes_svc_ip, "127.0.0.1"))
        pki.kubeconfig("admin", "mizzen-test-admin", "system:masters")
        kl_crt, kl_key = pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                                   "system:masters")
        pki.kubeconfig("controller-manager", "system:kube-controller-manager")
        pki.kubeconfig("scheduler", "system:kube-scheduler")
        p = pki.root
        self._spawn("etcd", [
            "etcd", "--name", "mizzen-test", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
            "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380", "--initial-cluster", "mizzen-test=http://127.0.0.1:2380",
            "--log-level", "warn", "--quota-backend-bytes", str(2 << 30)])
        self._spawn("kube-apiserver", [
            "kube-apiserver", "--etcd-servers", "http://127.0.0.1:2379",
            "--bind-address", a.cp_ip, "--advertise-address", a.cp_ip, "--secure-port", str(API_PORT),
            "--tls-cert-file", str(p / "apiserver.crt"), "--tls-private-key-file", str(p / "apiserver.key"),
            "--client-ca-file", str(p / "ca.crt"),
            "--service-account-key-file", str(p / "sa.pub"),
            "--service-account-signing-key-file", str(p / "sa.key"),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--api-audiences", "https://kubernetes.default.svc.cluster.local,istio-ca",
            "--service-cluster-ip-range", a.service_cidr, "--authorization-mode", "Node,RBAC",
            # compact etcd every 5 s (default 5 min), and serve ConfigMaps without the watch cache, so a test
            # can watch from a compacted version and get 410 Gone as clients of a busy cluster do
            "--etcd-compaction-interval", "5s", "--watch-cache-sizes", "configmaps#0",
            # webhooks and aggregated APIs with a ``service:`` reference are dialled at the Service's
            # endpoints (the pod), not its ClusterIP: nothing routes ClusterIPs in the API server's namespace
            "--enable-aggregator-routing=true",
            # the node agent's kubelet API (kubectl logs; tools/kube/kubelet_api.py): the API server presents
            # its client certificate, and verifies the node's (the cluster CA's, for the node's IP)
            "--kubelet-client-certificate", str(kl_crt), "--kubelet-client-key", str(kl_key),
            "--kubelet-certificate-authority", str(p / "ca.crt"),
            "--kubelet-preferred-address-types", "InternalIP",
            "--allow-privileged", "--profiling=false", "--v", "1"])
        self._wait_ready(timeout)
        self._spawn("kube-controller-manager", [
            "kube-controller-manager", "--kubeconfig", str(p / "controller-manager.kubeconfig"),
            "--authentication-kubeconfig", str(p / "controller-manager.kubeconfig"),
            "--authorization-kubeconfig", str(p / "controller-manager.kubeconfig"),
            "--service-account-private-key-file", str(p / "sa.key"), "--root-ca-file", str(p / "ca.crt"),
            "--use-service-account-credentials", "--leader-elect=false", "--bind-address", "127.0.0.1",
            "--service-cluster-ip-range", a.service_cidr,
            "--profiling=false", "--v", "1"])
        self._spawn("kube-scheduler", [
            "kube-scheduler", "--kubeconfig", str(p / "scheduler.kubeconfig"),
            "--authentication-kubeconfig", str(p / "scheduler.kubeconfig"),
            "--authorization-kubeconfig", str(p / "scheduler.kubeconfig"),
            "--leader-elect=false", "--bind-address", "127.0.0.1", "--profiling=false", "--v", "1"])

    def stop(self) -> None:
        """Stop every process by pid (TERM, then KILL), remove the network objects and the work dir."""
        for name in sorted(self.procs, key=_stop_rank):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        self.net.down()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> TestCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers
    def kubectl(self, *args: str, timeout: float = 60.0, stdin: str | None = None) -> str:
        r = subprocess.run([str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                           input=stdin, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        """SIGKILL one component (e.g. ``kube-apiserver``); :meth:`respawn` starts it again."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def respawn(self, name: str) -> None:
        """Start a killed component again with its arguments. Call it from the thread that started the
        cluster: the processes die with the thread that spawned them (PR_SET_PDEATHSIG)."""
        self._spawn(name, self._argv[name])

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the API server answers ``/readyz`` (safe from any thread)."""
        self._wait_ready(timeout)

    def _spawn(self, name: str, argv: list[str]) -> None:
        self._argv[name] = argv
        exe = str(self.bin / argv[0])
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            ["ip", "netns", "exec", self.net.netns, exe, *argv[1:]], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
        log.close()

    def _wait_ready(self, timeout: float) -> None:
        url = f"{self.server}/readyz"
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.root / "ca.crt"))
        ctx.load_cert_chain(str(self.pki.root / "admin.crt"), str(self.pki.root / "admin.key"))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = self.log(name)[-2000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError as e:
                last = str(e)
            time.sleep(0.3)
        raise RuntimeError(f"{url} not ready after {timeout:.0f} s: {last}")


def main(argv: list[str]) -> int:
    if argv[1:2] != ["up"]:
        print("usage: testcluster.py up   (serves until Ctrl-C, then removes everything)", file=sys.stderr)
        return 2
    reason = unavailable_reason()
    if reason:
        print(f"cannot start a test cluster: {reason}", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    with TestCluster() as c:
        print(f"cluster ready in {time.monotonic() - t0:.1f} s at {c.server}; KUBECONFIG={c.kubeconfig}",
              flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
