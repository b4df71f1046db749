"""Bookinfo, Istio's sample application, re-implemented as small aiohttp apps (productpage, details, reviews,
ratings) that behave like Istio's so Istio's tasks and docs apply unchanged.

Run one with ``python -m mizzen.bookinfo <productpage|details|reviews|ratings> [--version v2]``; it listens on
``$HOST:$PORT`` (default 127.0.0.1:9080) and sends outbound calls through ``$HTTP_PROXY`` when set.
"""

from pathlib import Path

from mizzen.bookinfo.common import FORWARD_HEADERS, forward_headers
from mizzen.bookinfo.details import make_details_app
from mizzen.bookinfo.productpage import make_productpage_app
from mizzen.bookinfo.ratings import make_ratings_app
from mizzen.bookinfo.reviews import make_reviews_app

MANIFEST = Path(__file__).parent / "manifests" / "bookinfo.yaml"   # Istio's bookinfo.yaml, runnable locally

__all__ = [
    "FORWARD_HEADERS",
    "MANIFEST",
    "forward_headers",
    "make_details_app",
    "make_productpage_app",
    "make_ratings_app",
    "make_reviews_app",
]
