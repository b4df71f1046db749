"""Converters from other ingress APIs to Istio configuration (``mizzen convert ...``).

:mod:`mizzen.convert.ingress` turns Kubernetes ``Ingress`` objects into a Gateway plus VirtualServices.
"""

from __future__ import annotations
