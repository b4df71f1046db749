"""``mizzen convert ingress -f FILE``: print the Gateway and VirtualServices for Kubernetes Ingresses.

Reads multi-document YAML, converts with :func:`mizzen.convert.ingress.convert`, writes YAML to stdout with
the warnings as leading comments (and on stderr), so the output can be piped into ``mizzen apply -f -``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
import yaml

from mizzen.cli.common import echo_err, fail, read_inputs
from mizzen.convert.ingress import convert

__all__ = ["app", "ingress"]

app = typer.Typer(help="Convert other ingress APIs to Istio configuration.", no_args_is_help=True)


def render_yaml(docs: list[dict[str, Any]], warnings: list[str]) -> str:
    head = "".join(f"# warning: {w}\n" for w in warnings)
    body = "---\n".join(yaml.safe_dump(d, sort_keys=False, default_flow_style=False) for d in docs)
    return head + body


INGRESS_HELP = (
    "Kubernetes Ingress (networking.k8s.io/v1) -> Istio Gateway + VirtualServices (YAML on stdout).\n\n"
    "nginx-class Ingresses (ingressClassName nginx, or the kubernetes.io/ingress.class: nginx annotation) "
    "keep ingress-nginx's path semantics: ImplementationSpecific is a string prefix; use-regex and "
    "rewrite-target make regex paths whose rewrite replaces the whole path ($N groups the path lacks are "
    "empty, as in nginx).\n\n"
    "Every other class follows Istio's own Ingress conversion: ImplementationSpecific is exact, except *, /* "
    "and .* (everything) and a /* or .* suffix (a prefix); routes longest first, exact first.\n\n"
    "A tls entry without secretName gets no HTTPS server; with one, the server uses credentialName."
)


@app.command("ingress", help=INGRESS_HELP)
def ingress(
    filename: Annotated[list[str], typer.Option("--filename", "-f", help="Ingress YAML, dir or -")],
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Namespace for Ingresses without one")
    ] = None,
) -> None:
    """Kubernetes Ingress -> Istio Gateway + VirtualServices (see INGRESS_HELP)."""
    docs: list[dict[str, Any]] = []
    for src in read_inputs(filename):
        try:
            loaded = list(yaml.safe_load_all(src.text))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            fail(f"{src.file}{line}: invalid YAML: {getattr(e, 'problem', None) or e}")
        docs.extend(d for d in loaded if isinstance(d, dict))
    out, warnings = convert(docs, namespace)
    for w in warnings:
        echo_err(f"warning: {w}")
    if not out:
        fail("no Ingress could be converted")
    typer.echo(render_yaml(out, warnings), nl=False)
