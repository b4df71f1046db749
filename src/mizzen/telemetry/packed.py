"""Istio's HTTP metric labels packed into one Envoy stats tag, and expanded again in the Prometheus text the
agent serves.

Why: ``envoy.access_loggers.stats`` formats every tag of every stat on every request and encodes each tag's
name and value into the stat's name before it looks the stat up (no cache to configure, and tags given
explicitly skip the bootstrap's ``stats_tags`` extraction). With Istio's 25 labels on each of the four HTTP
metrics that was most of what telemetry cost per request (~30k instructions per stat, ~1.2k per tag). So each
HTTP stat has one tag, ``mizzen_istio``, whose ``value_format`` is one format string::

    <constants>;<names>|<value 1>|...|<value n>

- ``<constants>``: the labels whose value is fixed for the logger (``reporter``, the proxy's own workload
  labels, the service at a server, ``request_protocol``, a client's ``connection_security_policy``),
  ``name=value`` joined by ``,`` (values escaped as the exchange header's, ``~HH``);
- ``<names>``: the names of the labels formatted per request (command operators), in the order of the values;
  ``source_*`` / ``destination_*`` is the peer's fields in one string (a server: the exchange header,
  :mod:`mizzen.telemetry.exchange`; a client: its endpoint's EDS metadata ``mizzen.peer``/``peer``), which
  expands into the seven peer labels (``source_:a+b`` when a Telemetry removed some; ``unknown`` when
  empty, empty labels when malformed);
- the values: Envoy's command operators, formatted per request; the peer's string goes last, since only it
  can hold a ``|`` (a caller outside the mesh may send anything), so splitting cannot shift the others.
  A name may end in a mode: ``?`` (empty -> ``unknown``), ``!`` (``mutual_tls`` when the value, the peer's
  URI SAN, is there, else ``none``): what CEL decided per request before. Istio's label names are
  written as one character each (the label's rank in :data:`ISTIO_LABEL_ORDER`, base 36; a longer name is
  itself). Labels whose operators are the same are formatted once: their names share one value, joined by
  ``&`` (a server's ``source_principal?`` and ``connection_security_policy!`` are both its peer's URI SAN).
  A mode ``#i`` takes the i-th of the value's ``,``-joined escaped fields (empty when absent): a client's
  three ``destination_service*`` labels share one cluster metadata string.

The agent expands ``mizzen_istio`` into Istio's labels, in Istio's order, wherever it serves Envoy's stats
(``:15090`` and the merged ``:15020``, :mod:`mizzen.telemetry.prometheus`): once per distinct series per
scrape, never per request. Prometheus and every dashboard see Istio's names and labels; only Envoy's own admin
endpoint shows the packed form. Series that expand alike (two different malformed peer headers) are added up.
TCP metrics (once per connection) keep one tag per label.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Mapping

from mizzen.core.workload_labels import PEER_FIELDS, UNKNOWN
from mizzen.telemetry import exchange

__all__ = ["EMPTY", "EMPTY_IS_UNKNOWN", "ISTIO_LABEL_ORDER", "MTLS_FROM_PEER_SAN", "TAG", "expand",
           "family_blocks", "field", "unpack", "value_format"]

TAG = "mizzen_istio"
# Istio's label order (its stats plugin's)
ISTIO_LABEL_ORDER = (
    "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
    "destination_canonical_service", "destination_canonical_revision", "destination_cluster",
    "request_protocol", "response_code", "grpc_response_status", "response_flags",
    "connection_security_policy")
_RANK = {k: i for i, k in enumerate(ISTIO_LABEL_ORDER)}
# in the tag, an Istio label's name is one character (its rank in base 36): the tag is formatted, encoded,
# joined into the stat's name and hashed by every stat on every request, and the names were most of its bytes
_CODES = "0123456789abcdefghijklmnopqrstuvwxyz"
_CODE_OF = {k: _CODES[i] for i, k in enumerate(ISTIO_LABEL_ORDER)}
_NAME_OF = {c: k for k, c in _CODE_OF.items()}


def _code(label: str) -> str:
    return _CODE_OF.get(label, label)


def _name(code: str) -> str:
    """A label's name from its code (a name of more than one character is the name itself)."""
    return _NAME_OF.get(code, code) if len(code) == 1 else code
# modes of per-request labels, a suffix of their name: what the agent makes of the formatted value
EMPTY_IS_UNKNOWN = "?"          # empty -> unknown (a principal without a certificate)
MTLS_FROM_PEER_SAN = "!"        # the peer's URI SAN there -> mutual_tls, else none
_PEERS = ("source", "destination")


def field(i: int) -> str:
    """The mode of a label that is the ``i``-th of its value's ``,``-joined escaped fields."""
    return f"#{i}"


# a label's value that is the empty string, a constant (a plain "" is reported as ``unknown``, as a tag of its
# own would be): Istio's ``grpc_response_status`` of a request that is not gRPC
EMPTY = "\x00"


def value_format(labels: Mapping[str, str], peer_operators: Collection[str], order: Iterable[str],
                 modes: Mapping[str, str] | None = None) -> str:
    """The one tag's ``value_format`` for the labels ``order`` names (``labels``: label -> literal value or
    command operators): labels whose value is one of ``peer_operators`` are the peer's fields in one string
    (``core.workload_labels.encode_peer``: the peer header, the endpoint's metadata; all ``source_*`` or all
    ``destination_*`` ones); other values with a ``%`` are formatted per request (``modes``: label ->
    :data:`EMPTY_IS_UNKNOWN` or :data:`MTLS_FROM_PEER_SAN`; labels with the same operators share one
    value), the rest are constants (:data:`EMPTY`: the empty string; empty -> ``unknown``, as a tag of its own
    would be)."""
    modes = modes or {}
    consts: list[str] = []
    names: list[str] = []
    formats: list[str] = []
    peer: dict[str, list[str]] = {}
    peer_operator = ""
    for k in order:
        v = labels[k]
        if v in peer_operators:
            if peer_operator and v != peer_operator:
                raise ValueError("one peer string per logger")
            peer_operator = v
            prefix, _, field = k.partition("_")
            if prefix not in _PEERS or field not in PEER_FIELDS:
                raise ValueError(f"{k}: only source_* / destination_* peer fields come from the peer header")
            peer.setdefault(prefix, []).append(field)
        elif "%" in v:
            if v in formats:            # formatted once per request, read by every label that names it
                i = formats.index(v)
                names[i] += "&" + _code(k) + modes.get(k, "")
            else:
                names.append(_code(k) + modes.get(k, ""))
                formats.append(v)
        elif v == EMPTY:
            consts.append(f"{_code(k)}=")
        else:
            consts.append(f"{_code(k)}={exchange.escape(v or UNKNOWN)}")
    if len(peer) > 1:
        raise ValueError("one peer header per logger")
    for prefix, fields in peer.items():
        every = sorted(fields) == sorted(PEER_FIELDS)
        names.append(f"{prefix}_*" if every else f"{prefix}_:{'+'.join(fields)}")
        formats.append(peer_operator)
    return f"{','.join(consts)};{','.join(names)}" + "".join("|" + f for f in formats)


def unpack(packed: str) -> dict[str, str] | None:
    """The labels a packed tag value stands for; None when it is not one."""
    head, _, rest = packed.partition("|")
    consts, sep, names_s = head.partition(";")
    if not sep:
        return None
    labels: dict[str, str] = {}
    for kv in filter(None, consts.split(",")):
        k, eq, v = kv.partition("=")
        if not eq:
            return None
        labels[_name(k)] = exchange.unescape(v)
    names = names_s.split(",") if names_s else []
    values = rest.split("|", len(names) - 1) if names else []
    if len(values) != len(names):
        return None
    for shared, value in zip(names, values, strict=True):
        for name in shared.split("&"):
            _unpack_one(labels, name, value)
    return labels


def _unpack_one(labels: dict[str, str], name: str, value: str) -> None:
    """Sets the label(s) one name of a packed tag stands for from its formatted value."""
    prefix, _, fields = name.partition("_")
    if prefix in _PEERS and (fields == "*" or fields.startswith(":")):
        # nothing (no header and no default, no endpoint or no metadata): unknown; malformed: empty
        peer = exchange.decode_or_empty(value) if value else dict.fromkeys(PEER_FIELDS, UNKNOWN)
        wanted = PEER_FIELDS if fields == "*" else tuple(fields[1:].split("+"))
        labels |= {f"{prefix}_{f}": peer.get(f, "") for f in wanted}
    elif (at := name.rfind("#")) > 0 and name[at + 1:].isdigit():
        fields_ = value.split(",")
        i = int(name[at + 1:])
        labels[_name(name[:at])] = exchange.unescape(fields_[i]) if i < len(fields_) else ""
    elif name.endswith(EMPTY_IS_UNKNOWN):
        labels[_name(name[:-1])] = value or UNKNOWN
    elif name.endswith(MTLS_FROM_PEER_SAN):
        labels[_name(name[:-1])] = "mutual_tls" if value else "none"
    else:
        labels[_name(name)] = value


def _prom_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _prom_unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], v) if "\\" in v else v


@functools.lru_cache(maxsize=16384)
def _rendered(escaped: str) -> str:
    labels = unpack(_prom_unescape(escaped))
    if labels is None:
        return f'{TAG}="{escaped}"'             # not ours: left as Envoy rendered it
    keys = sorted(labels, key=lambda k: (_RANK.get(k, len(_RANK)), k))
    return ",".join(f'{k}="{_prom_escape(labels[k])}"' for k in keys)


_TAG_LABEL = re.compile(TAG + r'="((?:[^"\\\n]|\\.)*)"')


def _add(a: str, b: str) -> str:
    if a.isdigit() and b.isdigit():
        return str(int(a) + int(b))
    return repr(float(a) + float(b))


class SeriesSum:
    """Prometheus text being rewritten line by line, where a rewritten series may coincide with an earlier
    one: its value is added to that line's (counters, histogram buckets, sums and counts all add up), so the
    text never holds a series twice. Lines keep their first-seen order."""

    def __init__(self) -> None:
        self._out: list[str] = []
        self._at: dict[str, int] = {}       # a series -> its line in _out

    def line(self, line: str) -> None:
        """A line kept as it is (comments, series not rewritten)."""
        self._out.append(line)

    def series(self, series: str, value: str) -> None:
        if (i := self._at.get(series)) is not None:
            self._out[i] = f"{series} {_add(self._out[i].rpartition(' ')[2], value)}"
        else:
            self._at[series] = len(self._out)
            self._out.append(f"{series} {value}")

    def text(self) -> str:
        return "\n".join(self._out)


def family_blocks(text: str) -> list[str]:
    """Prometheus text cut before each ``# TYPE`` line: Envoy writes each family's lines together under its
    one TYPE line, so a rewrite that touches a few families can leave the other blocks as they are (the
    first block holds what comes before any TYPE line, often nothing). Joined, they are ``text``."""
    parts = text.split("\n# TYPE ")
    if len(parts) == 1:
        return parts
    return [parts[0] + "\n", *("# TYPE " + p + "\n" for p in parts[1:-1]), "# TYPE " + parts[-1]]


def expand(text: str) -> str:
    """Prometheus text with every ``mizzen_istio="..."`` label replaced by the labels it packs. Two Envoy
    series that expand to the same labels (two different malformed peer headers: both have empty peer labels)
    become one, their values added (counters, histogram buckets, sums and counts all add up): a scrape never
    holds a series twice. Only the families that hold the tag are read line by line."""
    if TAG not in text:
        return text
    return "".join(_expand_block(b) if TAG in b else b for b in family_blocks(text))


def _expand_block(text: str) -> str:
    out = SeriesSum()
    for line in text.split("\n"):
        m = _TAG_LABEL.search(line) if TAG in line and not line.startswith("#") else None
        if m is None:
            out.line(line)
            continue
        series, _, value = (line[:m.start()] + _rendered(m[1]) + line[m.end():]).rpartition(" ")
        out.series(series, value)
    return out.text()
