"""ratings v1: ``GET /ratings/<id>`` returns {"id", "ratings": {"Reviewer1": 5, "Reviewer2": 4}} like Istio's
ratings.js (in-memory version, including ``POST /ratings/<id>`` to replace a product's ratings); ``/health``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from mizzen.bookinfo.common import json_response

_STORE = web.AppKey("ratings_store", dict)


def _product_id(request: web.Request) -> int | None:
    try:
        return int(request.match_info["id"])
    except ValueError:
        return None


def _local(request: web.Request, product_id: int) -> dict[str, Any]:
    stored: dict[int, dict[str, Any]] = request.app[_STORE]
    if product_id in stored:
        return stored[product_id]
    return {"id": product_id, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}


async def _get(request: web.Request) -> web.Response:
    product_id = _product_id(request)
    if product_id is None:
        return json_response({"error": "please provide numeric product ID"}, status=400)
    return json_response(_local(request, product_id))


async def _post(request: web.Request) -> web.Response:
    product_id = _product_id(request)
    if product_id is None:
        return json_response({"error": "please provide numeric product ID"}, status=400)
    try:
        ratings = json.loads(await request.text())
    except ValueError:
        return json_response({"error": "please provide valid ratings JSON"}, status=400)
    request.app[_STORE][product_id] = {"id": product_id, "ratings": ratings}
    return json_response(_local(request, product_id))


async def _health(_: web.Request) -> web.Response:
    return json_response({"status": "Ratings is healthy"})


def make_ratings_app() -> web.Application:
    app = web.Application()
    app[_STORE] = {}
    app.router.add_get("/health", _health)
    app.router.add_get("/ratings/{id}", _get)
    app.router.add_post("/ratings/{id}", _post)
    return app
