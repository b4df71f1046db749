"""Kubernetes Deployment (apps/v1) checks that matter to the local mesh: a selector whose matchLabels match
the pod template's labels, replicas >= 0, containers with unique DNS-label names and an image, container
ports 1..65535 with TCP/UDP/SCTP protocols and valid, unique names.
"""

from __future__ import annotations

from mizzen.config.model import Config
from mizzen.config.validation.common import (
    Report,
    as_dict,
    as_list,
    check_labels,
    index_path,
    is_k8s_dns_label,
    key_path,
    register,
)
from mizzen.config.validation.service import check_int_port, check_protocol_k8s, is_iana_svc_name


def _check_containers(r: Report, path: str, containers: list[object]) -> None:
    names: set[str] = set()
    for i, raw in enumerate(containers):
        cp = index_path(path, i)
        c = as_dict(raw)
        name = c.get("name")
        if not isinstance(name, str) or not name:
            r.error(key_path(cp, "name"), "Required value")
        elif not is_k8s_dns_label(name):
            r.error(key_path(cp, "name"), f'Invalid value: "{name}": must be a lowercase RFC 1123 label')
        elif name in names:
            r.error(key_path(cp, "name"), f'Duplicate value: "{name}"')
        else:
            names.add(name)
        if not isinstance(c.get("image"), str) or not c.get("image"):
            r.error(key_path(cp, "image"), "Required value")
        port_names: set[str] = set()
        for j, rawp in enumerate(as_list(c.get("ports"))):
            pp = index_path(key_path(cp, "ports"), j)
            p = as_dict(rawp)
            if "containerPort" not in p:
                r.error(key_path(pp, "containerPort"), "Required value")
            else:
                check_int_port(r, key_path(pp, "containerPort"), p.get("containerPort"), "containerPort")
            check_protocol_k8s(r, key_path(pp, "protocol"), p.get("protocol"))
            pname = p.get("name")
            if pname is not None:
                if not isinstance(pname, str) or not is_iana_svc_name(pname):
                    r.error(key_path(pp, "name"), f'Invalid value: "{pname}": must be an IANA service name '
                                                  '(at most '
                                                  "15 lowercase letters, digits and '-', with at least one "
                                                  "letter)")
                elif pname in port_names:
                    r.error(key_path(pp, "name"), f'Duplicate value: "{pname}"')
                else:
                    port_names.add(pname)


@register("Deployment")
def validate_deployment(cfg: Config, r: Report) -> None:
    spec = dict(cfg.spec)
    replicas = spec.get("replicas")
    if replicas is not None and (isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0):
        r.error("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")
    selector = as_dict(spec.get("selector"))
    match_labels = as_dict(selector.get("matchLabels"))
    if not selector:
        r.error("spec.selector", "Required value")
    elif not match_labels and not as_list(selector.get("matchExpressions")):
        r.error("spec.selector", "Invalid value: empty selector is invalid for deployment")
    check_labels(r, "spec.selector.matchLabels", match_labels)
    template = as_dict(spec.get("template"))
    labels = as_dict(as_dict(template.get("metadata")).get("labels"))
    check_labels(r, "spec.template.metadata.labels", labels)
    if not template:
        r.error("spec.template", "Required value")
        return
    if match_labels and any(labels.get(k) != v for k, v in match_labels.items()):
        r.error("spec.template.metadata.labels",
                f"Invalid value: {labels}: `selector` does not match template `labels` ({match_labels})")
    pod = as_dict(template.get("spec"))
    containers = as_list(pod.get("containers"))
    if not containers:
        r.error("spec.template.spec.containers", "Required value")
    _check_containers(r, "spec.template.spec.containers", containers)
    _check_containers(r, "spec.template.spec.initContainers", as_list(pod.get("initContainers")))
