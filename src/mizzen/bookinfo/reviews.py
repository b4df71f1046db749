"""reviews v1/v2/v3 (one app, version chosen at start), like Istio's LibertyRestEndpoint.java.

v1 shows no ratings; v2 (black stars) and v3 (red stars) call ``ratings`` with the propagated headers and
Istio's timeouts (10 s for black, 2.5 s otherwise); when ratings fails each rating becomes
``{"error": "Ratings service is currently unavailable"}``. Env ``ENABLE_RATINGS``/``STAR_COLOR`` override.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mizzen.bookinfo.common import client_session, forward_headers, get_json, json_response, service_url

RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"
REVIEWS: tuple[tuple[str, str], ...] = (
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by "
        "Shakespeare.",
    ),
)
_VERSIONS = {"v1": (False, "black"), "v2": (True, "black"), "v3": (True, "red")}


@dataclass(frozen=True)
class ReviewsConfig:
    version: str
    ratings_enabled: bool
    star_color: str
    podname: str
    clustername: str
    ratings_url: str

    @property
    def ratings_timeout(self) -> float:
        return 10.0 if self.star_color == "black" else 2.5

    @staticmethod
    def from_env(version: str) -> ReviewsConfig:
        if version not in _VERSIONS:
            raise ValueError(f"reviews version must be one of {sorted(_VERSIONS)}, got {version!r}")
        enabled, color = _VERSIONS[version]
        if "ENABLE_RATINGS" in os.environ:
            enabled = os.environ["ENABLE_RATINGS"].lower() == "true"
        color = os.environ.get("STAR_COLOR") or color
        return ReviewsConfig(
            version=version,
            ratings_enabled=enabled,
            star_color=color,
            podname=os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or "",
            clustername=os.environ.get("CLUSTER_NAME") or "null",  # as Istio's Java prints a missing one
            ratings_url=service_url("ratings", "RATINGS_SERVICE_PORT") + "/ratings",
        )


_CONFIG = web.AppKey("reviews_config", ReviewsConfig)


def reviews_body(cfg: ReviewsConfig, product_id: int, ratings: dict[str, Any] | None) -> dict[str, Any]:
    reviews: list[dict[str, Any]] = []
    for reviewer, text in REVIEWS:
        review: dict[str, Any] = {"reviewer": reviewer, "text": text}
        if cfg.ratings_enabled:
            stars = (ratings or {}).get(reviewer)
            if isinstance(stars, int) and not isinstance(stars, bool):
                review["rating"] = {"stars": stars, "color": cfg.star_color}
            else:
                review["rating"] = {"error": RATINGS_UNAVAILABLE}
        reviews.append(review)
    return {"id": str(product_id), "podname": cfg.podname, "clustername": cfg.clustername, "reviews": reviews}


async def _fetch_ratings(cfg: ReviewsConfig, product_id: int, request: web.Request) -> dict[str, Any] | None:
    async with client_session(cfg.ratings_timeout) as session:
        status, body = await get_json(
            session, f"{cfg.ratings_url}/{product_id}", forward_headers(request.headers)
        )
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("ratings"), dict):
        return None
    ratings: dict[str, Any] = body["ratings"]
    return ratings


async def _reviews(request: web.Request) -> web.Response:
    cfg = request.app[_CONFIG]
    try:
        product_id = int(request.match_info["id"])
    except ValueError:
        return json_response({"error": "please provide numeric product id"}, status=400)
    ratings = await _fetch_ratings(cfg, product_id, request) if cfg.ratings_enabled else None
    return json_response(reviews_body(cfg, product_id, ratings))


async def _health(_: web.Request) -> web.Response:
    return json_response({"status": "Reviews is healthy"})


def make_reviews_app(version: str = "v1") -> web.Application:
    app = web.Application()
    app[_CONFIG] = ReviewsConfig.from_env(version)
    app.router.add_get("/health", _health)
    app.router.add_get("/reviews/{id}", _reviews)
    return app
