"""Route simulator: "which route, subset and endpoint would this request hit, and why?"

Evaluates a request against one proxy's generated xDS resources (the same LDS/RDS/CDS/EDS the control plane
sends) the way Envoy does, and explains every decision. Pure: no I/O. Modules: ``match`` (domains, route
matchers), ``action`` (forward/redirect/direct response, policies), ``cluster`` (clusters and endpoints),
``engine`` (the driver), ``decode`` (packed resources), ``report`` (the human-readable rendering).
"""

from mizzen.simulate.decode import resources_from_any
from mizzen.simulate.engine import DIRECTIONS, InvalidRequest, SimRequest, build_request, simulate
from mizzen.simulate.report import render

__all__ = ["DIRECTIONS", "InvalidRequest", "SimRequest", "build_request", "render", "resources_from_any",
           "simulate"]
