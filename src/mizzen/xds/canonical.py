"""Canonical (process-independent) bytes of an xDS resource, for content-hash versions.

``SerializeToString(deterministic=True)`` orders map entries, but the bytes inside a nested ``Any`` (every
``typed_config``) were fixed when the producer called ``Pack()``, and upb's non-deterministic map order is
seeded per process. So the same config could hash differently after a restart. Here nested ``Any`` payloads
are re-packed deterministically (on a copy; the caller's message is never touched) before serializing.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = ["canonical_bytes"]

_ANY = "google.protobuf.Any"
# Well-known types that can never contain an Any: not worth walking (Struct is often large).
_LEAF_TYPES = frozenset("google.protobuf." + n for n in (
    "Struct", "Value", "ListValue", "Duration", "Timestamp", "UInt32Value", "BoolValue", "UInt64Value",
    "Int64Value", "DoubleValue", "StringValue",
))
# Walk plans: per message type, the fields that can (transitively) lead to an Any.
_ANY_ONE, _ANY_LIST, _ANY_MAP, _MSG_ONE, _MSG_LIST, _MSG_MAP = range(6)
_Plan = dict[str, int]
_plans: dict[str, _Plan] = {}


def _plan(desc: Descriptor) -> _Plan:
    name = desc.full_name
    plan = _plans.get(name)
    if plan is not None:
        return plan
    _plans[name] = {}      # provisional: breaks recursion cycles (a cycle adds nothing new)
    steps: dict[str, int] = {}
    for fd in desc.fields:
        if fd.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        sub = fd.message_type
        if sub.GetOptions().map_entry:
            vfd = sub.fields_by_name["value"]
            if vfd.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            if vfd.message_type.full_name == _ANY:
                steps[fd.name] = _ANY_MAP
            elif vfd.message_type.full_name not in _LEAF_TYPES and _plan(vfd.message_type):
                steps[fd.name] = _MSG_MAP
        elif sub.full_name == _ANY:
            steps[fd.name] = _ANY_LIST if fd.is_repeated else _ANY_ONE
        elif sub.full_name not in _LEAF_TYPES and (sub.full_name == name or _plan(sub)):
            steps[fd.name] = _MSG_LIST if fd.is_repeated else _MSG_ONE
    plan = _plans[name] = steps
    return plan


def _anys(msg: Message, out: list[Message]) -> list[Message]:
    """Collect the Any messages reachable from ``msg`` (not looking inside them)."""
    plan = _plan(msg.DESCRIPTOR)
    if not plan:
        return out
    for fd, value in msg.ListFields():
        kind = plan.get(fd.name)
        if kind is None:
            continue
        if kind == _ANY_ONE:
            out.append(value)
        elif kind == _MSG_ONE:
            _anys(value, out)
        elif kind == _ANY_LIST:
            out.extend(value)
        elif kind == _MSG_LIST:
            for v in value:
                _anys(v, out)
        elif kind == _ANY_MAP:
            out.extend(value.values())
        else:
            for v in value.values():
                _anys(v, out)
    return out


def _repack(a: Message) -> None:
    """Re-serialize an Any's payload deterministically (its own nested Anys first)."""
    type_name = a.type_url.rpartition("/")[2]
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        return          # type not linked into this process: keep the producer's bytes
    inner = message_factory.GetMessageClass(desc)()
    inner.ParseFromString(a.value)
    for nested in _anys(inner, []):
        _repack(nested)
    a.value = inner.SerializeToString(deterministic=True)


def canonical_bytes(msg: Message) -> bytes:
    """Deterministic bytes of ``msg`` with nested Any payloads canonicalized; equal content -> equal bytes in
    any process. Messages without an Any are serialized directly (no copy)."""
    if not _anys(msg, []):
        plain: bytes = msg.SerializeToString(deterministic=True)
        return plain
    copy = type(msg)()
    copy.CopyFrom(msg)
    for a in _anys(copy, []):
        _repack(a)
    out: bytes = copy.SerializeToString(deterministic=True)
    return out
