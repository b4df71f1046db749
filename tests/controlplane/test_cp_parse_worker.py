"""The parse worker's answer: objects rebuilt on the event loop with their field -> line maps left unparsed
(LazyLines) until a message needs them, equal to what the loader made."""

from __future__ import annotations

import pickle

from mizzen.config.loader import load_texts
from mizzen.config.model import Config
from mizzen.config.validation import line_of
from mizzen.controlplane.parse_worker import LazyLines, Prepared, load_prepared, unpack
from mizzen.controlplane.persist import record_json

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-{i}
  labels: {{app: reviews}}
spec:
  hosts: [reviews-{i}]
  http:
  - match: [{{uri: {{prefix: /a}}}}]
    route:
    - destination: {{host: reviews-{i}, subset: v1}}
      weight: 60
    - destination: {{host: reviews-{i}, subset: v2}}
      weight: 40
"""


async def test_unpacked_objects_equal_the_loaders_and_parse_their_lines_only_when_used() -> None:
    text = "---\n".join(VS.format(i=i) for i in range(3))
    docs = [(text, "many.yaml")]
    expected = load_texts(docs, "bookinfo", 10).configs
    prepared = load_prepared(docs, "bookinfo", 10)
    assert all(at > 0 for _, _, at in prepared.records)   # every lines map found in the stored JSON
    got = (await unpack(prepared)).configs
    assert got == expected
    for g, e in zip(got, expected, strict=True):
        assert isinstance(g.lines, LazyLines) and not g.lines.parsed
        assert g.spec == e.spec and g.labels == e.labels and g.source == e.source
        assert g.content_hash() == e.content_hash() and record_json(g) == record_json(e)
        assert not g.lines.parsed   # none of that needed them
        # a message about the object finds its line (this parses the map, once)
        assert line_of(g, "spec.http[0].route[1].weight") == line_of(e, "spec.http[0].route[1].weight") > 0
        assert g.lines.parsed and dict(g.lines) == dict(e.lines) and len(g.lines) == len(e.lines)
    again = pickle.loads(pickle.dumps(got[0]))   # a pickled object carries the plain map
    assert type(again.lines) is dict and again.lines == dict(expected[0].lines)


async def test_a_record_whose_lines_are_not_at_the_end_is_parsed_whole() -> None:
    docs = [(VS.format(i=0), "one.yaml")]
    prepared = load_prepared(docs, "bookinfo", 10)
    raw, digest, _ = prepared.records[0]
    prepared.records[0] = (raw, digest, -1)
    [config] = (await unpack(prepared)).configs
    [loaded] = load_texts(docs, "bookinfo", 10).configs
    assert type(config.lines) is dict and config.lines == dict(loaded.lines) and config == loaded


async def test_unpacked_objects_carry_their_field_index_from_the_worker() -> None:
    """The first push after a big apply reads every new object's field index (PushContext.uses_field): the
    worker builds it and the rebuild sets it (or, from an answer without it, builds it in its slices), so
    the event loop does not walk 1,000 specs in one stretch."""
    text = "---\n".join(VS.format(i=i) for i in range(3))
    prepared = load_prepared([(text, "many.yaml")], "bookinfo", 10)
    assert len(prepared.fields) == 3
    without = Prepared(prepared.records, prepared.errors, prepared.warnings)
    for config in [*(await unpack(prepared)).configs, *(await unpack(without)).configs]:
        cached = config.__dict__.get("_spec_fields")
        assert cached is not None
        assert {"hosts", "http", "match", "uri", "prefix", "route", "destination", "weight"} <= cached
        fresh = Config(config.kind, config.api_version, config.name, config.namespace, config.spec)
        assert "_spec_fields" not in fresh.__dict__ and fresh.spec_fields() == cached
        # kept across the store's re-stamping of the creation time
        assert config.with_created(1.0).__dict__.get("_spec_fields") is cached
    # what the worker sent is what the object carries (not walked again on the loop)
    prepared.fields[0] = b'["sent-by-the-worker"]'
    assert (await unpack(prepared)).configs[0].spec_fields() == {"sent-by-the-worker"}
