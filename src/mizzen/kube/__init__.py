"""Mizzen on Kubernetes: reading config and services from a real API server, as istiod does.

* :mod:`.client` opens an API client from a kubeconfig (or the in-cluster service account).
* :mod:`.reflector` lists and watches one resource type (resourceVersion, bookmarks, re-list on 410 Gone,
  backoff), like client-go's Reflector; it knows Kubernetes, not the mesh.
* :mod:`.config_source` mirrors Istio's custom resources and Services into the control plane's config store,
  validated like any applied object.

The client library is ``kubernetes_asyncio`` (see :mod:`.client` for why).
"""
