"""Sidecar injection (Istio's ``istio-sidecar-injector``), pure: a Pod (or a workload's pod template) plus the
injector's values and the mesh config in, the injected Pod out; no I/O.

- :mod:`.values`: the chart values the template reads (``global.proxy.*``, ``global.hub``/``tag``, ...) and
  the ProxyConfig (mesh ``defaultConfig`` + the pod's ``proxy.istio.io/config``), with Istio's defaults.
- :mod:`.policy`: whether a pod is injected (Istio's ``injectRequired``) and the webhook's selectors.
- :mod:`.template`: Istio's injection template rendered as data: ``istio-init``, ``istio-proxy``, volumes,
  labels and annotations.
- :mod:`.probes`: HTTP/TCP probes rewritten to the agent's ``/app-health/<container>/...`` on 15020.
- :mod:`.pod`: :func:`inject_pod` (merging the template into the pod, container order, the status annotation).
- :mod:`.workloads`: ``kube-inject`` over multi-document YAML (Deployments, StatefulSets, ... and Pods).
- :mod:`.webhook`: the AdmissionReview answer with a JSON patch, and the MutatingWebhookConfiguration.
"""

from mizzen.kube.inject.pod import InjectError, inject_pod
from mizzen.kube.inject.values import InjectConfig, Values

__all__ = ["InjectConfig", "InjectError", "Values", "inject_pod"]
