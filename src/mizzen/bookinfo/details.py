"""details v1: ``GET /details/<id>`` returns book details as JSON like Istio's details.rb; ``/health``."""

from __future__ import annotations

from aiohttp import web

from mizzen.bookinfo.common import json_response


def book_details(product_id: int) -> dict[str, object]:
    return {
        "id": product_id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }


async def _health(_: web.Request) -> web.Response:
    return json_response({"status": "Details is healthy"})


async def _details(request: web.Request) -> web.Response:
    last = request.path.rstrip("/").split("/")[-1]
    try:
        product_id = int(last)
    except ValueError:
        return json_response({"error": "please provide numeric product id"}, status=400)
    return json_response(book_details(product_id))


def make_details_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/health", _health)
    app.router.add_get("/details", _details)
    app.router.add_get("/details/{tail:.*}", _details)
    return app
