"""``mizzen dashboard prometheus|grafana|jaeger`` (istioctl dashboard's habits): where the demo's addons
serve, read from ``<state dir>/addons.json``; ``--browser`` opens the address. Grafana is not run here: the
command says how to point one's own Grafana at the demo's Prometheus and import Istio's dashboards."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from mizzen.auth.token import default_state_dir
from mizzen.cli.common import fail
from mizzen.observe.addons import read_addons
from mizzen.observe.prometheus import INSTALL_HINT, find_binary

__all__ = ["app"]

app = typer.Typer(help="Addresses of the mesh's dashboards (Prometheus, Jaeger) and how to use Grafana.",
                  no_args_is_help=True)

# Istio's dashboards as published on grafana.com (manifests/addons/dashboards: the same JSON)
GRAFANA_DASHBOARDS = (("Istio Mesh Dashboard", 7639), ("Istio Service Dashboard", 7636),
                      ("Istio Workload Dashboard", 7630), ("Istio Control Plane Dashboard", 7645),
                      ("Istio Performance Dashboard", 11829), ("Istio Wasm Extension Dashboard", 13277))

Browser = Annotated[bool, typer.Option("--browser", help="Also open it in the default browser")]


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
               "a coming release) shows traces from that API.")
    if browser:
        webbrowser.open(url)
