"""The loader: documents and field lines, List expansion, JSON, namespaces, passive and cluster-scoped kinds,
duplicates, directories."""

from __future__ import annotations

import json
from pathlib import Path

from mizzen.config.errors import Severity
from mizzen.config.loader import load_paths, load_text, parse_documents

TWO_DOCS = """\
# leading comment
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  labels:
    app.kubernetes.io/name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
---
---
apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: reviews
"""


def test_config_parse_documents_keeps_field_lines_and_skips_empty_documents() -> None:
    docs, issues = parse_documents(TWO_DOCS, "r.yaml")
    assert not issues
    assert [d.data["kind"] for d in docs] == ["DestinationRule", "Service"]
    dr, svc = docs
    assert dr.line == 3 and dr.file == "r.yaml"
    assert dr.lines["spec.host"] == 10
    assert dr.lines["spec.subsets[0]"] == 12
    assert dr.lines["spec.subsets[0].labels.version"] == 14
    assert dr.lines['metadata.labels["app.kubernetes.io/name"]'] == 8
    assert svc.line == 17
    assert svc.lines["spec.ports[0].port"] == 23


def test_config_duplicate_yaml_keys_are_reported_with_their_line() -> None:
    docs, issues = parse_documents("a: 1\nb:\n  c: 2\n  c: 3\n", "d.yaml")
    assert [str(i) for i in issues] == ['d.yaml:4: b.c: duplicate key "c" in mapping']
    assert docs[0].data == {"a": 1, "b": {"c": 3}}


def test_config_kind_list_is_expanded_with_rebased_lines() -> None:
    text = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: bookinfo
- apiVersion: networking.istio.io/v1
  kind: Gateway
  metadata:
    name: gw
    namespace: bookinfo
  spec:
    servers:
    - port: {number: 80, name: http, protocol: HTTP}
      hosts: ["*"]
"""
    docs, issues = parse_documents(text, "l.yaml")
    assert not issues
    assert [d.data["kind"] for d in docs] == ["Namespace", "Gateway"]
    assert docs[1].line == 8 and docs[1].lines["spec.servers[0].hosts"] == 16
    result = load_text(text, "l.yaml")
    assert result.ok, result.errors
    ns, gw = result.configs
    assert ns.namespace == "" and gw.namespace == "bookinfo"


def test_config_json_input_loads_with_lines() -> None:
    obj = {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "ext"},
           "spec": {"hosts": ["api.example.com"], "addresses": ["2001:db8::1"],
                    "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}], "resolution": "DNS"}}
    text = json.dumps(obj, indent=2)
    result = load_text(text, "se.json")
    assert result.ok, [str(e) for e in result.errors]
    cfg = result.configs[0]
    assert cfg.spec["addresses"] == ["2001:db8::1"]
    assert cfg.lines["spec.ports[0].number"] == text.splitlines().index('        "number": 443,') + 1
    compact = load_text(json.dumps(obj, separators=(",", ":")), "se.json")
    assert compact.ok, [str(e) for e in compact.errors]


def test_config_ipv6_in_flow_sequence_is_one_string_like_kubectl() -> None:
    docs, issues = parse_documents("addresses: [1.2.3.4, 2001:db8::, 'x']\nb: {c: d}\n", "f.yaml")
    assert not issues
    assert docs[0].data == {"addresses": ["1.2.3.4", "2001:db8::", "x"], "b": {"c": "d"}}


def test_config_namespace_resolution() -> None:
    svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n{ns}spec:\n  ports:\n  - port: 80\n"
    assert load_text(svc.format(ns=""), "s.yaml").configs[0].namespace == "default"
    assert load_text(svc.format(ns=""), "s.yaml", namespace="bookinfo").configs[0].namespace == "bookinfo"
    same = load_text(svc.format(ns="  namespace: bookinfo\n"), "s.yaml", namespace="bookinfo")
    assert same.ok and same.configs[0].namespace == "bookinfo"
    bad = load_text(svc.format(ns="  namespace: Not_Valid\n"), "s.yaml")
    assert not bad.ok and "metadata.namespace" in str(bad.errors[0])
    ns = load_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bookinfo\n", "n.yaml", namespace="x")
    assert ns.ok and ns.configs[0].namespace == ""


def test_config_passive_kinds_are_kept_with_their_body_as_spec() -> None:
    text = """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: bookinfo-reviews
  labels:
    account: reviews
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  color: blue
"""
    result = load_text(text, "p.yaml", namespace="bookinfo")
    assert result.ok
    sa, cm = result.configs
    assert (sa.kind, sa.namespace, sa.labels) == ("ServiceAccount", "bookinfo", {"account": "reviews"})
    assert dict(cm.spec) == {"data": {"color": "blue"}}
    assert cm.source is not None and cm.source.line == 8


def test_config_config_fields_are_filled() -> None:
    result = load_text(TWO_DOCS, "r.yaml", namespace="bookinfo")
    assert result.ok and not result.warnings
    dr = result.configs[0]
    assert (dr.kind, dr.api_version, dr.name, dr.namespace) == (
        "DestinationRule", "networking.istio.io/v1", "reviews", "bookinfo")
    assert dr.labels == {"app.kubernetes.io/name": "reviews"}
    assert str(dr.source) == "r.yaml:3"
    assert dr.spec["subsets"][0]["labels"] == {"version": "v1"}


def test_config_duplicates_within_one_load_are_errors(tmp_path: Path) -> None:
    doc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n  - port: 80\n"
    (tmp_path / "one.yaml").write_text(doc)
    (tmp_path / "two.yml").write_text(doc)
    result = load_paths([tmp_path])
    assert len(result.configs) == 1
    assert [str(e) for e in result.errors] == [
        f"{tmp_path / 'two.yml'}:1: Service/a: duplicate object Service default/a "
        f"(first defined at {tmp_path / 'one.yaml'}:1)"]
    other_ns = load_paths([tmp_path / "one.yaml"], namespace="x")
    assert other_ns.ok


def test_config_load_paths_walks_directories_sorted_and_reports_missing(tmp_path: Path) -> None:
    sub = tmp_path / "b" / "c"
    sub.mkdir(parents=True)
    for i, name in enumerate(["z.yaml", "b/c/a.json", "b/m.yml"]):
        (tmp_path / name).write_text(json.dumps({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns{i}"}}))
    (tmp_path / "notes.txt").write_text("not: [yaml")
    result = load_paths([tmp_path, tmp_path / "missing.yaml"])
    assert [c.name for c in result.configs] == ["ns1", "ns2", "ns0"]
    assert [str(e) for e in result.errors] == [f"no such file or directory: {tmp_path / 'missing.yaml'}"]


def test_config_syntax_error_keeps_earlier_documents_but_fails() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n---\nkey: [unclosed\n"
    docs, issues = parse_documents(text, "s.yaml")
    assert len(docs) == 1
    assert len(issues) == 1 and issues[0].file == "s.yaml" and issues[0].line == 7
    assert not load_text(text, "s.yaml").ok


def test_config_structural_problems_of_objects() -> None:
    cases = {
        "kind: Service\nmetadata: {name: a}\n": "apiVersion is required",
        "apiVersion: v1\nmetadata: {name: a}\n": "kind is required",
        "apiVersion: v1\nkind: Service\n": "metadata is required",
        "apiVersion: v1\nkind: Service\nmetadata: {labels: {a: b}}\n": "metadata.name is required",
        "- a\n- b\n": "document must be a mapping",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\nextra: 1\n":
            'unknown field "extra"',
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec: [1]\n":
            "spec must be an object",
    }
    for text, expected in cases.items():
        result = load_text(text, "x.yaml")
        assert not result.ok, text
        assert expected in "\n".join(str(e) for e in result.errors), (text, result.errors)


def test_config_warnings_do_not_reject() -> None:
    text = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    tls:
      mode: SIMPLE
      caCertificates: /etc/ca.pem
      caCrl: /etc/crl.pem
"""
    result = load_text(text, "dr.yaml")
    assert result.ok and len(result.configs) == 1
    assert [str(w) for w in result.warnings] == [
        "dr.yaml:11: DestinationRule/reviews: spec.trafficPolicy.tls.caCrl: warning: accepted but not yet "
        "honoured by Mizzen: certificate revocation lists are not passed to Envoy yet"]
    assert result.warnings[0].severity is Severity.WARNING


def test_config_yaml_aliases_work_but_recursion_and_bombs_are_rejected() -> None:
    docs, issues = parse_documents("base: &b {a: 1}\ncopy: *b\n", "a.yaml")
    assert not issues and docs[0].data == {"base": {"a": 1}, "copy": {"a": 1}}
    docs, issues = parse_documents("a: &x [1, *x]\n", "r.yaml")
    assert not docs and [str(i) for i in issues] == ["r.yaml:1: recursive YAML alias"]
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 8):
        prev = chr(ord("a") + i - 1)
        bomb += f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{', '.join(['*' + prev] * 10)}]\n"
    docs, issues = parse_documents(bomb, "bomb.yaml")
    assert not docs and "document too large" in str(issues[0])
