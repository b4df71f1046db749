"""Bad input to the loader (``mizzen validate``, apply): each case is a clear Issue naming the problem, never
a traceback (issue 8, item 2: deep nesting, wrong types, YAML reader errors, lone surrogates, huge numbers,
impossible dates, namespaces with a newline)."""

from __future__ import annotations

import pytest

from mizzen.config.loader import MAX_DEPTH, TooManyObjects, load_paths, load_text, load_texts
from mizzen.config.validation.common import is_k8s_dns_label, is_k8s_dns_subdomain

SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec:\n  ports:\n  - port: 9080\n"


def only_error(text: str, namespace: str | None = None) -> str:
    result = load_text(text, "f.yaml", namespace)
    assert result.configs == [] and len(result.errors) == 1, result.errors
    return str(result.errors[0])


@pytest.mark.parametrize("text", [
    "a: " + "[" * 600 + "]" * 600,                                     # flow lists (RecursionError before)
    "spec: " + "{a: " * 600 + "1" + "}" * 600,                          # flow maps
    "x: [" + "[" * 600 + "a:[" + "]" * 601,                           # the pure-Python loader (":[" in flow)
    "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 400)),          # block style
])
def test_deep_nesting_is_an_issue(text: str) -> None:
    err = only_error(text)
    assert "nested too deeply" in err or "maximum nesting depth" in err or "YAML syntax error" in err


def test_nesting_limit_is_exact() -> None:
    def nested(levels: int) -> str:
        value = "1"
        for _ in range(levels):
            value = "{a: " + value + "}"
        return f"apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: x}}\nsecrets: {value}\n"

    assert load_text(nested(MAX_DEPTH - 2)).errors == []
    assert "nested too deeply (more than 100 levels)" in str(load_text(nested(MAX_DEPTH + 1)).errors[0])


def test_service_port_of_the_wrong_type() -> None:
    err = only_error(SERVICE.replace("port: 9080", "port: {a: 1}"))
    assert err == ("f.yaml:6: Service/reviews: spec.ports[0].port: Invalid value: {'a': 1}: port must be an "
                   "integer")
    errors = [str(e) for e in load_text(SERVICE.replace("port: 9080", "port: [1]\n    protocol: {x: y}"),
                                        "f.yaml").errors]
    assert errors == ["f.yaml:6: Service/reviews: spec.ports[0].port: Invalid value: [1]: port must be an "
                      "integer",
                      "f.yaml:7: Service/reviews: spec.ports[0].protocol: Unsupported value: \"{'x': 'y'}\": "
                      'supported values: "SCTP", "TCP", "UDP"']


@pytest.mark.parametrize(("text", "reason", "line"), [
    ("apiVersion: v1\nkind: Service\x00\n", "control characters are not allowed #x0000", 2),
    ("apiVersion: v1\nkind: x\x07\nfoo: [a:[b]]\n", "special characters are not allowed #x0007", 2),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: \"\udc80\"}\n", "lone surrogate U+DC80", 3),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: " + "1" * 5000 + "}]}\n",
     "invalid value: Exceeds the limit (4300 digits) for integer string conversion", 1),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: x, creationTimestamp: 2001-02-30}\n",
     "invalid value: day is out of range for month", 1),
])
def test_unreadable_text_is_an_issue_with_its_line(text: str, reason: str, line: int) -> None:
    err = only_error(text)
    assert err.startswith(f"f.yaml:{line}: ") and reason in err, err


@pytest.mark.parametrize("namespace", ["bookinfo\n", "a\nb", "..", "Bookinfo", "a/b", "x" * 64, "-a"])
def test_namespace_from_the_command_line_is_validated(namespace: str) -> None:
    err = only_error(SERVICE, namespace)
    assert f"invalid namespace {namespace!r}: a lowercase RFC 1123 label" in err
    assert load_paths([], namespace=namespace).errors[0].message.startswith("invalid namespace")


def test_names_with_a_trailing_newline_are_refused() -> None:
    # Python's "$" matches before a final newline; Kubernetes' (Go's) does not
    assert not is_k8s_dns_label("bookinfo\n") and not is_k8s_dns_subdomain("reviews\n")
    err = only_error(SERVICE.replace("name: reviews", 'name: "reviews\\n"'))
    assert "metadata.name: Invalid value" in err
    vs = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n"
          "  hosts: [reviews]\n  http:\n  - name: \"a\\n\"\n    route:\n    - destination: {host: reviews}\n")
    assert load_text(vs).errors == [] or "http[0]" in str(load_text(vs).errors[0])


def test_long_valid_names_load() -> None:
    name = ".".join(["a" * 63] * 3) + "." + "b" * 61          # 253 characters
    result = load_text(SERVICE.replace("name: reviews", f"name: {name}"))
    assert result.errors == [] and result.configs[0].name == name


def test_too_many_objects_are_refused_before_validation() -> None:
    docs = [(SERVICE.replace("reviews", f"s{i}"), f"f{i}.yaml") for i in range(5)]
    assert len(load_texts(docs, "default", max_objects=5).configs) == 5
    with pytest.raises(TooManyObjects, match="too many objects in one request: 6 \\(at most 5"):
        load_texts([*docs, (SERVICE, "g.yaml")], "default", max_objects=5)
