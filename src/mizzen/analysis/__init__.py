"""``istioctl analyze`` for Mizzen: cross-object checks that per-object validation (:mod:`..validation`)
cannot do, with Istio's message codes and levels. One module per analyzer family (:mod:`.schema`,
:mod:`.annotation_rules`, :mod:`.workloads`, :mod:`.references`, :mod:`.conflicts`, :mod:`.gateways`,
:mod:`.virtualservices`, :mod:`.subsets`); :func:`analyze` (:mod:`.runner`) runs them all; :mod:`.inputs`
reads files the way ``istioctl analyze`` does (unmodelled kinds skipped, invalid objects IST0106);
:mod:`.whatif` merges candidate objects into a snapshot the way the store would.
"""

from mizzen.analysis.context import workloads_from_deployments
from mizzen.analysis.inputs import AnalysisInput, read_documents
from mizzen.analysis.message import CODES, LEVEL_NAMES, AnalysisIssue, code_of, render
from mizzen.analysis.runner import ANALYZERS, analyze
from mizzen.analysis.whatif import merge

__all__ = ["ANALYZERS", "CODES", "LEVEL_NAMES", "AnalysisInput", "AnalysisIssue", "analyze", "code_of",
           "merge", "read_documents", "render", "workloads_from_deployments"]
