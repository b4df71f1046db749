"""``istioctl analyze`` for Mizzen: cross-object checks that per-object validation (:mod:`..validation`)
cannot do, with Istio's message codes. One module per analyzer family (:mod:`.references`, :mod:`.conflicts`,
:mod:`.gateways`, :mod:`.endpoints`); :func:`analyze` (:mod:`.runner`) runs them all; :mod:`.whatif` merges
candidate objects into a snapshot the way the store would.
"""

from mizzen.analysis.context import workloads_from_deployments
from mizzen.analysis.message import CODES, AnalysisIssue, code_of, render
from mizzen.analysis.runner import ANALYZERS, analyze
from mizzen.analysis.whatif import merge

__all__ = ["ANALYZERS", "CODES", "AnalysisIssue", "analyze", "code_of", "merge", "render",
           "workloads_from_deployments"]
