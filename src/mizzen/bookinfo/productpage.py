"""productpage v1, like Istio's productpage.py: the UI (``/``, ``/productpage``), sign-in (``/login``,
``/logout``; a signed ``session`` cookie whose user is sent to reviews as ``end-user``), the JSON API under
``/api/v1/products``, ``/static`` and ``/health``. Calls details (3 s timeout) and reviews (3 s, tried twice,
as Istio does on purpose for the fault-injection task) with the propagated headers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

from mizzen.bookinfo.common import client_session, forward_headers, get_json, json_response, service_url
from mizzen.bookinfo.page import PRODUCTS, render_index, render_productpage

DETAILS_UNAVAILABLE = "Sorry, product details are currently unavailable for this book."
REVIEWS_UNAVAILABLE = "Sorry, product reviews are currently unavailable for this book."
RATINGS_UNAVAILABLE = "Sorry, product ratings are currently unavailable for this book."
TIMEOUT_S = 3.0
SESSION_COOKIE = "session"
_SECRET = web.AppKey("session_secret", bytes)


def _sign(secret: bytes, payload: bytes) -> str:
    digest = hmac.new(secret, payload, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def encode_session(secret: bytes, user: str) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"user": user}).encode()).decode().rstrip("=")
    return f"{payload}.{_sign(secret, payload.encode())}"


def session_user(request: web.Request) -> str:
    """The signed-in user from the session cookie ('' if none or tampered)."""
    raw = request.cookies.get(SESSION_COOKIE, "")
    payload, _, sig = raw.partition(".")
    if not payload or not hmac.compare_digest(sig, _sign(request.app[_SECRET], payload.encode())):
        return ""
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return ""
    user = data.get("user") if isinstance(data, dict) else None
    return user if isinstance(user, str) else ""


def outbound_headers(request: web.Request) -> dict[str, str]:
    headers = forward_headers(request.headers)
    user = session_user(request)
    if user:
        headers["end-user"] = user
    return headers


async def _get_with_error(
    session: ClientSession, url: str, headers: dict[str, str], error: str, attempts: int = 1
) -> tuple[int, dict[str, Any]]:
    status = 0
    for _ in range(attempts):
        status, body = await get_json(session, url, headers)
        if status == 200 and isinstance(body, dict):
            return 200, body
    return (status or 500), {"error": error}


async def product_details(product_id: str | int, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with client_session(TIMEOUT_S) as session:
        url = f"{service_url('details')}/details/{product_id}"
        return await _get_with_error(session, url, headers, DETAILS_UNAVAILABLE)


async def product_reviews(product_id: str | int, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    # Istio's productpage tries reviews twice ("bug introduced explicitly for the fault injection task").
    async with client_session(TIMEOUT_S) as session:
        url = f"{service_url('reviews')}/reviews/{product_id}"
        return await _get_with_error(session, url, headers, REVIEWS_UNAVAILABLE, attempts=2)


async def product_ratings(product_id: str | int, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with client_session(TIMEOUT_S) as session:
        url = f"{service_url('ratings')}/ratings/{product_id}"
        return await _get_with_error(session, url, headers, RATINGS_UNAVAILABLE)


def topology() -> dict[str, Any]:
    details = {"name": service_url("details"), "endpoint": "details", "children": []}
    ratings = {"name": service_url("ratings"), "endpoint": "ratings", "children": []}
    reviews = {"name": service_url("reviews"), "endpoint": "reviews", "children": [ratings]}
    return {"name": service_url("details"), "endpoint": "details", "children": [details, reviews]}


async def _index(_: web.Request) -> web.Response:
    return web.Response(text=render_index(topology()), content_type="text/html")


async def _health(_: web.Request) -> web.Response:
    return web.Response(text="Product page is healthy", content_type="text/html")


def _back(request: web.Request) -> str:
    return request.headers.get("Referer") or "productpage"


async def _login(request: web.Request) -> web.Response:
    form = await request.post()
    user = str(form.get("username") or request.query.get("username") or "")
    resp = web.HTTPFound(_back(request))
    if user:
        resp.set_cookie(SESSION_COOKIE, encode_session(request.app[_SECRET], user), path="/", httponly=True)
    return resp


async def _logout(request: web.Request) -> web.Response:
    resp = web.HTTPFound(_back(request))
    resp.del_cookie(SESSION_COOKIE, path="/")
    return resp


async def _productpage(request: web.Request) -> web.Response:
    product_id = 0
    headers = outbound_headers(request)
    details_status, details = await product_details(product_id, headers)
    reviews_status, reviews = await product_reviews(product_id, headers)
    html = render_productpage(
        PRODUCTS[product_id], details_status, details, reviews_status, reviews, session_user(request)
    )
    return web.Response(text=html, content_type="text/html")


async def _products(_: web.Request) -> web.Response:
    return json_response(list(PRODUCTS))


async def _product(request: web.Request) -> web.Response:
    status, body = await product_details(request.match_info["id"], outbound_headers(request))
    return json_response(body, status)


async def _reviews(request: web.Request) -> web.Response:
    status, body = await product_reviews(request.match_info["id"], outbound_headers(request))
    return json_response(body, status)


async def _ratings(request: web.Request) -> web.Response:
    status, body = await product_ratings(request.match_info["id"], outbound_headers(request))
    return json_response(body, status)


def static_dir() -> Path:
    return Path(str(resources.files("mizzen.bookinfo").joinpath("static")))


def make_productpage_app(secret: bytes | None = None) -> web.Application:
    app = web.Application()
    # One fixed default key (Istio's app has one too) so every replica accepts every replica's cookie.
    app[_SECRET] = secret or os.environ.get("PRODUCTPAGE_SECRET", "mizzen-bookinfo").encode()
    app.router.add_get("/", _index)
    app.router.add_get("/index.html", _index)
    app.router.add_get("/health", _health)
    app.router.add_post("/login", _login)
    app.router.add_get("/logout", _logout)
    app.router.add_get("/productpage", _productpage)
    app.router.add_get("/api/v1/products", _products)
    app.router.add_get("/api/v1/products/{id}", _product)
    app.router.add_get("/api/v1/products/{id}/reviews", _reviews)
    app.router.add_get("/api/v1/products/{id}/ratings", _ratings)
    app.router.add_static("/static", static_dir())
    return app
