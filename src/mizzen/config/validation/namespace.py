"""Kubernetes Namespace checks: the name is an RFC 1123 label (no dots), and only ``finalizers`` in spec."""

from __future__ import annotations

from mizzen.config.model import Config
from mizzen.config.validation.common import Report, is_k8s_dns_label, key_path, register


@register("Namespace")
def validate_namespace(cfg: Config, r: Report) -> None:
    if not is_k8s_dns_label(cfg.name):
        r.error("metadata.name", f'Invalid value: "{cfg.name}": a lowercase RFC 1123 label must consist of '
                                 'lower '
                                 "case alphanumeric characters or '-', and must start and end with an "
                                 "alphanumeric "
                                 "character")
    for k in cfg.spec:
        if k != "finalizers":
            r.error(key_path("spec", str(k)), f'unknown field "{k}"')
