"""PeerAuthentication semantic checks, Istio's rules (``ValidatePeerAuthentication`` and the CRD's CEL rules):
``portLevelMtls`` needs a non-empty workload selector, is not empty when given, and its keys are port numbers
1-65535; selector labels are label-shaped and carry no wildcard. The mode enum is the CRD schema's job.
"""

from __future__ import annotations

from mizzen.config.model import Config
from mizzen.config.validation.common import Report, as_dict, check_labels, key_path, register

__all__ = ["validate_peer_authentication"]


@register("PeerAuthentication")
def validate_peer_authentication(cfg: Config, r: Report) -> None:
    spec = dict(cfg.spec)
    selector = spec.get("selector")
    labels = as_dict(as_dict(selector).get("matchLabels"))
    check_labels(r, "spec.selector.matchLabels", labels)
    for k, v in labels.items():
        if "*" in str(k) or "*" in str(v):
            r.error(key_path("spec.selector.matchLabels", str(k)),
                    f'wildcard is not supported in selector: "{k}={v}"')
    if "portLevelMtls" not in spec:
        return
    ports = spec.get("portLevelMtls")
    if not isinstance(ports, dict) or not ports:
        r.error("spec.portLevelMtls", "spec.portLevelMtls in body should have at least 1 properties")
        return
    if not labels:
        r.error("spec.portLevelMtls", "portLevelMtls requires selector")
    for key in ports:
        path = key_path("spec.portLevelMtls", str(key))
        text = str(key)
        if not text.isdigit():
            r.error(path, f'type conversion error from string "{text}" to port number')
        elif not 1 <= int(text) <= 65535:
            r.error(path, "port must be between 1-65535")
