"""Istio's CA protocol messages, built at import time with protobuf's descriptor API (no generated code,
no build step, no hand-written wire encoding).

The schema is istio.io/api ``security/v1alpha1/ca.proto`` (package ``istio.v1.auth``)::

    message IstioCertificateRequest {
      string csr = 1;                          // PEM CSR
      int64 validity_duration = 3;             // seconds, optional
      google.protobuf.Struct metadata = 4;     // optional node metadata
    }
    message IstioCertificateResponse { repeated string cert_chain = 1; }   // leaf first, root last
    service IstioCertificateService {
      rpc CreateCertificate(IstioCertificateRequest) returns (IstioCertificateResponse);
    }

Field 2 (``subject_id``) was removed upstream and is reserved here too.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

__all__ = [
    "CREATE_CERTIFICATE",
    "PACKAGE",
    "SERVICE",
    "IstioCertificateRequest",
    "IstioCertificateResponse",
]

PACKAGE = "istio.v1.auth"
SERVICE = f"{PACKAGE}.IstioCertificateService"
CREATE_CERTIFICATE = f"/{SERVICE}/CreateCertificate"
_FILE = "security/v1alpha1/ca.proto"

_F = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name=_FILE, package=PACKAGE, syntax="proto3",
                                            dependency=[struct_pb2.DESCRIPTOR.name])
    fd.options.go_package = "istio.io/api/security/v1alpha1"
    req = fd.message_type.add(name="IstioCertificateRequest")
    req.field.add(name="csr", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL, json_name="csr")
    req.field.add(name="validity_duration", number=3, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL,
                  json_name="validityDuration")
    req.field.add(name="metadata", number=4, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                  type_name=".google.protobuf.Struct", json_name="metadata")
    req.reserved_range.add(start=2, end=3)
    resp = fd.message_type.add(name="IstioCertificateResponse")
    resp.field.add(name="cert_chain", number=1, type=_F.TYPE_STRING, label=_F.LABEL_REPEATED,
                   json_name="certChain")
    svc = fd.service.add(name="IstioCertificateService")
    svc.method.add(name="CreateCertificate", input_type=f".{PACKAGE}.IstioCertificateRequest",
                   output_type=f".{PACKAGE}.IstioCertificateResponse")
    return fd


def _load() -> tuple[Any, Any]:
    pool = descriptor_pool.Default()
    try:
        file_desc = pool.FindFileByName(_FILE)
    except KeyError:
        file_desc = pool.Add(_file())
    if file_desc.package != PACKAGE:   # another ca.proto under this name: use a private pool
        pool = descriptor_pool.DescriptorPool()
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(struct_pb2.DESCRIPTOR.serialized_pb))
        pool.Add(_file())
    req = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.IstioCertificateRequest"))
    resp = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.IstioCertificateResponse"))
    return req, resp


IstioCertificateRequest, IstioCertificateResponse = _load()
