"""``mizzen version`` and the process commands ``demo``, ``controlplane``, ``agent``: their options are
declared here, once; ``python -m mizzen.controlplane`` and ``python -m mizzen.agent`` run the same commands
through :func:`standalone`.

The process commands import their modules lazily (they pull in gRPC, aiohttp and the runner, which the other
commands do not need).
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Annotated, Any

import typer

from mizzen.cli.common import client, echo_err, fail
from mizzen.client import ApiError, Unreachable

__all__ = ["agent", "client_version", "controlplane", "demo", "standalone", "version"]

DEFAULT_XDS_PORT = 15010      # mizzen.controlplane.server's defaults (not imported: it pulls in gRPC)
DEFAULT_XDS_TLS_PORT = 15012
DEFAULT_HTTP_PORT = 15014
DEFAULT_WEBHOOK_PORT = 15017   # istiod's admission webhooks (mizzen.kube.webhooks.server)


def client_version() -> str:
    try:
        return dist_version("mizzen")
    except PackageNotFoundError:
        return "unknown"


def version(
    ctx: typer.Context,
    client_only: Annotated[bool, typer.Option("--client", help="Only the client version")] = False,
) -> None:
    """Client version, and the control plane's (plus connected proxies) when reachable."""
    typer.echo(f"client version: {client_version()}")
    if client_only:
        return
    c = client(ctx, timeout=5.0)
    try:
        typer.echo(f"control plane version: {c.version()}")
        proxies = c.syncz()
    except Unreachable:
        echo_err(f"control plane: not reachable at {c.server}")
        return
    except ApiError as e:
        echo_err(f"control plane: {'; '.join(e.errors)}")
        return
    typer.echo(f"data plane: {len(proxies)} prox{'y' if len(proxies) == 1 else 'ies'} connected")


def _default_state_dir() -> Path:
    from mizzen.demo import default_state_dir

    return default_state_dir()


MeshConfigOpt = Annotated[Path | None, typer.Option(
    "--mesh-config", metavar="FILE", show_default="Istio's defaults",
    help="Istio mesh config YAML (extensionProviders for CUSTOM authorization, rootNamespace, ...)")]


def load_mesh_config(path: Path | None, base: Any) -> Any:
    """``base`` (a MeshConfig) with the honoured fields of the mesh config file; a bad file is one error."""
    if path is None:
        return base
    import yaml

    from mizzen.core.mesh import with_mesh_file

    try:
        return with_mesh_file(base, yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise typer.BadParameter(f"{path}: {reason}", param_hint="--mesh-config") from None


def demo(
    host: Annotated[str, typer.Option(
        metavar="ADDRESS", help="Address the ingress gateway binds")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        metavar="PORT", help="Gateway HTTP port; serves Gateway servers for 80 and 8080")] = 8080,
    tls_port: Annotated[int, typer.Option(
        metavar="PORT", help="Gateway port for Gateway servers on 443")] = 8443,
    xds_port: Annotated[int, typer.Option(
        metavar="PORT", help="Control plane ADS (gRPC) port, plaintext (for tools)")] = DEFAULT_XDS_PORT,
    xds_tls_port: Annotated[int | None, typer.Option(
        metavar="PORT", show_default="15012 with the default --xds-port, else a free port",
        help="Control plane xDS and CA over TLS (what the demo's proxies use)")] = None,
    api_port: Annotated[int, typer.Option(
        metavar="PORT", help="Control plane HTTP API port")] = DEFAULT_HTTP_PORT,
    state_dir: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default="$MIZZEN_STATE_DIR or ~/.local/state/mizzen",
        help="Where config, logs and proxies live")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Forget config applied in earlier runs")] = False,
    no_bookinfo: Annotated[bool, typer.Option("--no-bookinfo",
                                              help="Start an empty mesh (gateway only)")] = False,
    ready_timeout: Annotated[float, typer.Option(metavar="SECONDS",
                                                 help="How long to wait for everything to be ready")] = 60.0,
    allow_external_bind: Annotated[bool, typer.Option(
        "--allow-external-bind",
        help="Let the gateway (--host, Gateway bind fields) serve on addresses outside loopback")] = False,
    prometheus_port: Annotated[int, typer.Option(
        metavar="PORT", help="Prometheus' port on 127.0.0.1 when prometheus is installed; 0 = none")] = 9090,
    scrape_interval: Annotated[float, typer.Option(
        metavar="SECONDS", help="Prometheus' scrape interval (Istio's addon: 15)")] = 15.0,
    mesh_config: MeshConfigOpt = None,
    jaeger_host: Annotated[str, typer.Option(
        metavar="ADDRESS", help="Jaeger's own loopback address when it is built (tools/jaeger/build.sh); "
                                "'' = none")] = "127.0.16.86",
    trace_sampling: Annotated[float, typer.Option(
        metavar="PERCENT", help="Requests traced (Istio's demo profile: 100)")] = 100.0,
) -> None:
    """Run Bookinfo in a local mesh: control plane, ingress gateway, workloads with their sidecars (and
    Prometheus scraping them, when installed)."""
    from mizzen.core.mesh import MeshConfig
    from mizzen.demo import DemoOptions, run

    load_mesh_config(mesh_config, MeshConfig())   # a bad file fails here, before anything starts
    opts = DemoOptions(host=host, port=port, tls_port=tls_port, xds_port=xds_port, xds_tls_port=xds_tls_port,
                       http_port=api_port,
                       state_dir=state_dir or _default_state_dir(), fresh=fresh, bookinfo=not no_bookinfo,
                       ready_timeout=ready_timeout, allow_external_bind=allow_external_bind,
                       prometheus_port=prometheus_port, scrape_interval_s=scrape_interval,
                       mesh_config=mesh_config.resolve() if mesh_config else None,
                       jaeger_host=jaeger_host, trace_sampling=trace_sampling)
    rc = run(opts)
    if rc:
        raise typer.Exit(rc)


def controlplane(
    state_dir: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default="in memory only", help="Persist applied objects here")] = None,
    xds_host: Annotated[str, typer.Option(metavar="ADDRESS", help="ADS (gRPC) listen address")] = "127.0.0.1",
    xds_port: Annotated[int, typer.Option(
        metavar="PORT", help="ADS port; 0 = any free port")] = DEFAULT_XDS_PORT,
    xds_tls_port: Annotated[int | None, typer.Option(
        metavar="PORT", show_default="15012 with the default --xds-port, else any free port",
        help="xDS and the CA over TLS (istiod's 15012); 0 = any free port, -1 = no CA and no TLS port")
    ] = None,
    ca_dir: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default="a self-signed root in <state dir>/ca",
        help="A plugged-in CA: Istio's cacerts files (ca-cert.pem, ca-key.pem, root-cert.pem, "
             "cert-chain.pem)")] = None,
    http_host: Annotated[str, typer.Option(metavar="ADDRESS", help="HTTP API listen address")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(metavar="PORT",
                                           help="HTTP API port; 0 = any free port")] = DEFAULT_HTTP_PORT,
    debounce_quiet: Annotated[float, typer.Option(
        metavar="SECONDS", help="Push after this long without a change")] = 0.1,
    debounce_max: Annotated[float, typer.Option(
        metavar="SECONDS", help="Push at the latest this long after the first change")] = 1.0,
    token_file: Annotated[Path | None, typer.Option(
        metavar="FILE", show_default="<state dir>/token, else $MIZZEN_STATE_DIR/token",
        help="The API token file, created 0600 at first start ($MIZZEN_TOKEN overrides)")] = None,
    allow_external_bind: Annotated[bool, typer.Option(
        "--allow-external-bind",
        help="Accept Gateway bind addresses outside loopback (with a warning)")] = False,
    kubeconfig: Annotated[Path | None, typer.Option(
        metavar="FILE", show_default="no cluster: config comes from applies",
        help="Read Istio config and Services from this cluster's API server (like istiod)")] = None,
    webhook_port: Annotated[int | None, typer.Option(
        metavar="PORT", show_default="15017 with --in-cluster or in a Kubernetes pod, else off",
        help="Serve the admission webhooks (/validate) over HTTPS with the mesh CA's certificate, like "
             "istiod's 15017; 0 = any free port, -1 = off")] = None,
    webhook_host: Annotated[str | None, typer.Option(
        metavar="ADDRESS", show_default="0.0.0.0 with --in-cluster or in a pod, else the --xds-host",
        help="Webhook listen address (an IP here is also in the serving certificate, for a url: client "
             "config)")] = None,
    in_cluster: Annotated[bool, typer.Option(
        "--in-cluster", help="Like --kubeconfig, with the pod's service account (KUBERNETES_SERVICE_HOST/"
                             "PORT and the token and CA under /var/run/secrets/kubernetes.io/serviceaccount)")
    ] = False,
    api_socket: Annotated[Path | None, typer.Option(
        metavar="PATH", show_default="none",
        help="Also serve the API on this Unix socket (0600: its file permissions are the credential)")
    ] = None,
    await_workload_sync: Annotated[float | None, typer.Option(
        metavar="SECONDS", show_default="no wait",
        help="Hold xDS until a runner sends its workloads (PUT /apis/workloads), at most this long")] = None,
    pods_url: Annotated[str | None, typer.Option(
        metavar="URL", help="Forward /apis/pods to this runner API (mizzen demo's)")] = None,
    standby: Annotated[bool, typer.Option(
        "--standby", help="A warm spare: prepare, then start when a line arrives on stdin (exit at its end)")
    ] = False,
    log_level: Annotated[str, typer.Option(metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
    zipkin_address: Annotated[str, typer.Option(
        metavar="HOST:PORT", show_default="no tracing",
        help="Trace collector (Zipkin API, e.g. Jaeger's), like defaultConfig.tracing.zipkin.address")] = "",
    trace_sampling: Annotated[float, typer.Option(
        metavar="PERCENT", help="Requests traced, like defaultConfig.tracing.sampling")] = 1.0,
    mesh_config: MeshConfigOpt = None,
) -> None:
    """Run the control plane (like istiod: config store, xDS server, HTTP API) in the foreground."""
    from mizzen.auth.token import TOKEN_ENV, TOKEN_FILE, default_state_dir
    from mizzen.controlplane.__main__ import serve
    from mizzen.controlplane.server import ControlPlaneOptions
    from mizzen.core.mesh import MeshConfig

    _check_level(log_level)
    if zipkin_address and not zipkin_address.rpartition(":")[2].isdigit():
        fail(f"--zipkin-address {zipkin_address!r}: want HOST:PORT")
    if not 0 <= trace_sampling <= 100:
        fail(f"--trace-sampling {trace_sampling}: want a percentage from 0 to 100")
    if xds_tls_port is None:
        xds_tls_port = DEFAULT_XDS_TLS_PORT if xds_port == DEFAULT_XDS_PORT else 0
    if ca_dir is not None and not ca_dir.is_dir():
        fail(f"--ca-dir {ca_dir}: not a directory (want Istio's cacerts files)")
    if in_cluster and kubeconfig is not None:
        fail("--in-cluster and --kubeconfig: give one")
    if ca_dir is not None and xds_tls_port < 0:
        fail("--ca-dir needs the CA: drop --xds-tls-port -1")
    in_pod = in_cluster or bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if webhook_port is not None and webhook_port >= 0 and xds_tls_port < 0:
        fail("--webhook-port needs the mesh CA for its certificate: drop --xds-tls-port -1")
    if webhook_port is None:   # istiod serves its webhooks in the cluster (with its CA); off on a laptop
        webhook_port = DEFAULT_WEBHOOK_PORT if in_pod and xds_tls_port >= 0 else -1
    if webhook_host is None and in_pod:
        webhook_host = "0.0.0.0"   # the API server calls the pod's address (the istiod Service's endpoint)
    serve(ControlPlaneOptions(state_dir=state_dir, xds_host=xds_host, xds_port=xds_port,
                              xds_tls_port=xds_tls_port if xds_tls_port >= 0 else None, ca_dir=ca_dir,
                              http_host=http_host,
                              http_port=http_port, debounce_quiet_s=debounce_quiet,
                              debounce_max_s=debounce_max, token=os.environ.get(TOKEN_ENV) or None,
                              token_file=token_file or (state_dir or default_state_dir()) / TOKEN_FILE,
                              mesh=load_mesh_config(mesh_config, MeshConfig(
                                  allow_external_bind=allow_external_bind,
                                  tracing_zipkin_address=zipkin_address, tracing_sampling=trace_sampling)),
                              api_socket=api_socket,
                              await_workload_sync_s=await_workload_sync, pods_url=pods_url,
                              kubeconfig=kubeconfig, in_cluster=in_cluster,
                              webhook_port=webhook_port if webhook_port >= 0 else None,
                              webhook_host=webhook_host),
          log_level, standby)


def _check_level(level: str) -> None:
    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        fail(f"--log-level {level!r}: want DEBUG, INFO, WARNING or ERROR")


def agent(
    ip: Annotated[str, typer.Option(metavar="ADDRESS", help="The workload's (loopback) address")],
    proxy_type: Annotated[str, typer.Option("--type", metavar="TYPE",
                                            help="sidecar, or router for a gateway")] = "sidecar",
    namespace: Annotated[str, typer.Option("--namespace", "-n", metavar="NAMESPACE",
                                           help="The workload's namespace")] = "default",
    name: Annotated[str | None, typer.Option(
        metavar="NAME", show_default="the app or istio label",
        help="Workload (pod) name")] = None,
    labels: Annotated[str, typer.Option(metavar="KEY=VALUE,...", help="Workload labels")] = "",
    service_account: Annotated[str, typer.Option(metavar="NAME", help="Service account")] = "default",
    xds: Annotated[str, typer.Option(metavar="HOST:PORT", help="Control plane ADS address")] =
        f"127.0.0.1:{DEFAULT_XDS_PORT}",
    ca_address: Annotated[str | None, typer.Option(
        metavar="HOST:PORT", show_default="none: plaintext ADS to --xds",
        help="The control plane's TLS port (xDS + CA, Istio's CA_ADDR): the agent gets the workload "
             "certificate, serves SDS and forwards Envoy's xDS there; needs --credential-file")] = None,
    credential_file: Annotated[Path | None, typer.Option(
        metavar="FILE", show_default="<work dir>/credential",
        help="The pod credential (0600), from POST /apis/credentials (with --proxyless: default next to "
             "--xds-socket)")] = None,
    root_cert: Annotated[Path | None, typer.Option(
        metavar="FILE", show_default="<work dir>/root-cert.pem",
        help="The mesh roots (0600) that the control plane's certificate is verified with")] = None,
    istio_token: Annotated[Path | None, typer.Option(
        metavar="FILE", show_default="none: --credential-file",
        help="Kubernetes: the pod's projected service-account token (audience istio-ca), read again for "
             "every CA call and xDS stream, instead of --credential-file; --root-cert is then the "
             "istio-ca-root-cert ConfigMap's root-cert.pem")] = None,
    admin_port: Annotated[int, typer.Option(
        metavar="PORT", help="The agent's admin proxy port on --ip, served when an API token is found "
                             "(Envoy's admin itself is a Unix socket in the work dir)")] = 15004,
    token_file: Annotated[Path | None, typer.Option(
        metavar="FILE", show_default="$MIZZEN_TOKEN, else $MIZZEN_STATE_DIR/token",
        help="The control plane's API token, which the admin proxy requires")] = None,
    app_host: Annotated[str, typer.Option(metavar="ADDRESS",
                                          help="Where the app listens (inbound target)")] = "127.0.0.1",
    http_proxy_port: Annotated[int | None, typer.Option(
        metavar="PORT", help="Sidecar outbound HTTP proxy port (the demo uses 15080)")] = None,
    gateway_ports: Annotated[str | None, typer.Option(
        metavar="PORT=LISTEN,...", help="Gateway port map, e.g. 80=8080,443=8443")] = None,
    locality: Annotated[str, typer.Option(metavar="REGION/ZONE/SUBZONE", help="Workload locality")] = "",
    xds_protocol: Annotated[str | None, typer.Option(
        metavar="delta|sotw", show_default="delta unless ISTIO_DELTA_XDS=false",
        help="ADS variant Envoy speaks")] = None,
    work_dir: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default="a temporary directory, removed on exit",
        help="Envoy bootstrap and logs")] = None,
    concurrency: Annotated[int, typer.Option(metavar="N", help="Envoy worker threads")] = 1,
    envoy_log_level: Annotated[str, typer.Option(metavar="LEVEL", help="Envoy's log level")] = "warning",
    log_level: Annotated[str, typer.Option(metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
    proxyless: Annotated[bool, typer.Option(
        help="No Envoy: serve the xDS proxy socket and write a gRPC xDS bootstrap")] = False,
    xds_socket: Annotated[Path, typer.Option(
        metavar="PATH", help="The xDS proxy's Unix socket")] = Path("XDS"),
    grpc_bootstrap: Annotated[Path, typer.Option(
        metavar="FILE", help="Where --proxyless writes the gRPC xDS bootstrap")] =
        Path("grpc-bootstrap.json"),
) -> None:
    """Run a proxy agent (like pilot-agent: bootstrap and supervise one Envoy) in the foreground."""
    from dataclasses import replace

    from mizzen.agent.__main__ import (
        parse_gateway_ports,
        parse_hostport,
        parse_labels,
        serve,
        serve_proxyless,
    )
    from mizzen.agent.bootstrap import ProxySpec
    from mizzen.agent.envoy import AgentOptions
    from mizzen.core.proxy import ProxyType

    _check_level(log_level)
    types = [t.value for t in ProxyType]
    if proxy_type not in types:
        fail(f"--type {proxy_type!r}: want one of {', '.join(types)}")
    if xds_protocol not in (None, "delta", "sotw"):
        fail(f"--xds-protocol {xds_protocol!r}: want delta or sotw")
    try:
        label_map = parse_labels(labels)
        xds_host, xds_port = parse_hostport(xds)
        gw_ports = parse_gateway_ports(gateway_ports) if gateway_ports else None
    except ValueError as e:
        fail(str(e))
    spec = ProxySpec(
        type=ProxyType(proxy_type), ip=ip, namespace=namespace,
        name=name or label_map.get("app") or label_map.get("istio") or "proxy", admin_port=admin_port,
        xds_host=xds_host, xds_port=xds_port, labels=label_map, service_account=service_account,
        app_host=app_host, http_proxy_port=http_proxy_port, gateway_ports=gw_ports, locality=locality,
    )
    if xds_protocol is not None:
        spec = replace(spec, delta_xds=xds_protocol == "delta")
    identity = None
    if ca_address is not None:
        from mizzen.agent.identity import IdentityError, IdentityOptions

        try:
            parse_hostport(ca_address)
            if istio_token is not None and credential_file is not None:
                raise ValueError("--istio-token and --credential-file: give one credential")
            identity = IdentityOptions(ca_address=ca_address, credential_file=credential_file,
                                       root_cert_file=root_cert, token_file=istio_token)
        except (ValueError, IdentityError) as e:
            fail(str(e))
    elif credential_file is not None or root_cert is not None or istio_token is not None:
        fail("--credential-file, --istio-token and --root-cert go with --ca-address (the control plane's TLS "
             "port)")
    if proxyless:
        serve_proxyless(spec, xds_socket, grpc_bootstrap, log_level, identity)
        return
    from mizzen.auth.token import find_token

    opts = AgentOptions(log_level=envoy_log_level, concurrency=concurrency, work_dir=work_dir,
                        admin_token=find_token(token_file).token, identity=identity)
    serve(spec, opts, log_level)


def standalone(command: str, prog_name: str, argv: list[str] | None = None) -> None:
    """Run one of the process commands as its own program (``python -m mizzen.agent ...``)."""
    from mizzen.cli.framework import MizzenCommand

    fn = {"controlplane": controlplane, "agent": agent, "demo": demo}[command]
    one = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    one.command(cls=MizzenCommand)(fn)  # type: ignore[type-var]
    one(args=argv, prog_name=prog_name)
