"""``mizzen dashboard`` (istioctl dashboard's habits): ``mizzen dashboard`` / ``mizzen dashboard kiali`` open
the console with a one-time login link (so the API token itself never reaches the browser);
``prometheus|jaeger`` print where the demo's addons serve, read from ``<state dir>/addons.json``;
``--browser`` opens the address. Grafana is not run here: the command says how to point one's own Grafana at
the demo's Prometheus and import Istio's dashboards."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from mizzen.auth.token import default_state_dir
from mizzen.cli.common import api_call, client, fail
from mizzen.console.addons import read_addons
from mizzen.observe.prometheus import INSTALL_HINT, find_binary

__all__ = ["app"]

app = typer.Typer(help="Open the console (the default), or the addresses of the mesh's other dashboards "
                       "(Prometheus, Jaeger) and how to use Grafana.", invoke_without_command=True)

# Istio's dashboards as published on grafana.com (manifests/addons/dashboards: the same JSON)
GRAFANA_DASHBOARDS = (("Istio Mesh Dashboard", 7639), ("Istio Service Dashboard", 7636),
                      ("Istio Workload Dashboard", 7630), ("Istio Control Plane Dashboard", 7645),
                      ("Istio Performance Dashboard", 11829), ("Istio Wasm Extension Dashboard", 13277))

Browser = Annotated[bool, typer.Option("--browser", help="Also open it in the default browser")]
ConsoleBrowser = Annotated[bool, typer.Option(
    "--browser/--no-browser", help="Open the console in a browser (its link is printed either way)")]


def _open_console(ctx: typer.Context, browser: bool) -> None:
    c = client(ctx)
    if not c.server.startswith("http://"):
        fail(f"the console is served over HTTP; {c.server} is not an HTTP address (use --server http://...)")
    with api_call(c):
        body = c._request("POST", "/apis/login-tickets", {})
    url = f"{c.server}{body['path']}"
    typer.echo(f"Console: {url}")
    ttl = int(body.get("expires_in_s", 30))
    typer.echo(f"(a one-time login link, valid {ttl} s; run this again for a new one)")
    if browser:
        webbrowser.open(url)


@app.callback()
def dashboard(ctx: typer.Context, browser: ConsoleBrowser = True) -> None:
    """Open the console (traffic graph, services, workloads, config, proxies, traces)."""
    if ctx.invoked_subcommand is None:
        _open_console(ctx, browser)


@app.command("kiali")
def kiali(ctx: typer.Context, browser: ConsoleBrowser = True) -> None:
    """The console (Mizzen's Kiali): same as `mizzen dashboard`."""
    _open_console(ctx, browser)


def _url(name: str) -> str:
    state = default_state_dir()
    url = read_addons(state).get(name)
    if not url:
        hint = f"; {INSTALL_HINT}" if name == "prometheus" and find_binary() is None else ""
        fail(f"no {name} is running for the demo in {state} (start mizzen demo{hint})")
    return url


@app.command("prometheus")
def prometheus(browser: Browser = False) -> None:
    """The demo's Prometheus (scraping every proxy and the control plane like Istio's addon)."""
    url = _url("prometheus")
    typer.echo(url)
    if browser:
        webbrowser.open(url)


@app.command("grafana")
def grafana() -> None:
    """How to use Istio's Grafana dashboards with the demo's Prometheus."""
    url = read_addons(default_state_dir()).get("prometheus") or \
        "http://127.0.0.1:9090 (when mizzen demo runs)"
    lines = [
        "Grafana is not run by Mizzen; use your own (e.g. apt-get install grafana, or a grafana/grafana "
        "container) with Istio's dashboards:",
        f"  1. Connections > Data sources > Add: Prometheus, URL {url}, named \"Prometheus\"",
        "  2. Dashboards > New > Import, by grafana.com ID (or the JSON files of Istio's "
        "manifests/addons/dashboards):",
        *(f"       {dash_id:>6}  {title}" for title, dash_id in GRAFANA_DASHBOARDS),
        "     choosing that data source. Labels and queries are Istio's, so they work unchanged.",
    ]
    typer.echo("\n".join(lines))


@app.command("jaeger")
def jaeger(browser: Browser = False) -> None:
    """The demo's Jaeger (its query API; its web UI is a placeholder here)."""
    url = _url("jaeger")
    typer.echo(url)
    typer.echo(f"Jaeger's query API: {url}/api/services, {url}/api/traces?service=productpage.bookinfo; "
               "its web UI is a placeholder in this build (no UI assets): the console (mizzen dashboard, "
               "Traces) shows traces from that API.")
    if browser:
        webbrowser.open(url)
