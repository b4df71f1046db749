"""productpage as a real process whose outbound calls go through a fake mesh proxy (HTTP_PROXY) that plays
details and reviews: page and stars, sign-in -> end-user, header propagation, error texts, the JSON API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from bookinfo_helpers import AppProc, FakeMesh, json_handler

from mizzen.bookinfo.details import book_details

REVIEWS_V3: dict[str, Any] = {
    "id": "0", "podname": "reviews-v3-5998b9d9dd-g49vt", "clustername": "null",
    "reviews": [
        {"reviewer": "Reviewer1", "text": "An extremely entertaining play by Shakespeare.",
         "rating": {"stars": 5, "color": "red"}},
        {"reviewer": "Reviewer2", "text": "Absolutely fun and entertaining.",
         "rating": {"stars": 4, "color": "red"}},
    ],
}


def _serve(mesh: FakeMesh, reviews: object = REVIEWS_V3) -> None:
    mesh.routes["details"] = json_handler(book_details(0))
    mesh.routes["reviews"] = json_handler(reviews)


async def test_productpage_renders_details_and_red_stars(
    start_app: Callable[..., AppProc], fake_mesh: FakeMesh
) -> None:
    _serve(fake_mesh)
    app = start_app("productpage", env={"HTTP_PROXY": fake_mesh.proxy_url})
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.get(f"{app.url}/productpage")
    assert r.status_code == 200
    html = r.text
    assert "<title>Simple Bookstore App</title>" in html
    assert "The Comedy of Errors" in html
    assert "Book Details" in html and "PublisherA" in html and "123-1234567890" in html
    assert "Book Reviews" in html and "An extremely entertaining play by Shakespeare." in html
    assert html.count('<font color="red">') == 2
    assert html.count("glyphicon glyphicon-star\"") == 9          # 5 + 4 full stars
    assert html.count("glyphicon-star-empty") == 1
    assert "reviews-v3-5998b9d9dd-g49vt" in html
    assert "Sign in" in html
    assert [s[1] for s in fake_mesh.seen] == ["/details/0", "/reviews/0"]


async def test_productpage_v1_reviews_have_no_stars(
    start_app: Callable[..., AppProc], fake_mesh: FakeMesh
) -> None:
    no_rating = [{k: v for k, v in rv.items() if k != "rating"} for rv in REVIEWS_V3["reviews"]]
    v1 = {**REVIEWS_V3, "reviews": no_rating}
    _serve(fake_mesh, v1)
    app = start_app("productpage", env={"HTTP_PROXY": fake_mesh.proxy_url})
    async with httpx.AsyncClient(trust_env=False) as c:
        html = (await c.get(f"{app.url}/productpage")).text
    assert "Book Reviews" in html and "Reviewer2" in html
    assert "glyphicon-star" not in html and "<font color" not in html


async def test_login_sends_end_user_to_reviews_and_logout_stops(
    start_app: Callable[..., AppProc], fake_mesh: FakeMesh
) -> None:
    _serve(fake_mesh)
    app = start_app("productpage", env={"HTTP_PROXY": fake_mesh.proxy_url})
    async with httpx.AsyncClient(trust_env=False, base_url=app.url) as c:
        login = await c.post("/login", data={"username": "jason", "passwd": "x"},
                             headers={"Referer": f"{app.url}/productpage"})
        assert login.status_code == 302
        assert login.headers["location"] == f"{app.url}/productpage"
        assert "session" in login.cookies
        html = (await c.get("/productpage")).text
        assert "jason" in html and "sign out" in html
        reviews_calls = fake_mesh.requests_to("reviews")
        assert reviews_calls[-1][2]["end-user"] == "jason"
        assert "session=" in reviews_calls[-1][2]["cookie"]      # cookies are propagated too, like Istio's
        details_calls = fake_mesh.requests_to("details")
        assert details_calls[-1][2]["end-user"] == "jason"
        logout = await c.get("/logout", headers={"Referer": f"{app.url}/productpage"})
        assert logout.status_code == 302
        c.cookies.clear()
        await c.get("/productpage")
        assert "end-user" not in fake_mesh.requests_to("reviews")[-1][2]
        # a forged cookie is ignored
        await c.get("/productpage", headers={"Cookie": "session=eyJ1c2VyIjogImphc29uIn0.forged"})
        assert "end-user" not in fake_mesh.requests_to("reviews")[-1][2]


async def test_tracing_headers_forwarded(start_app: Callable[..., AppProc], fake_mesh: FakeMesh) -> None:
    _serve(fake_mesh)
    app = start_app("productpage", env={"HTTP_PROXY": fake_mesh.proxy_url})
    tracing = {
        "x-request-id": "req-42", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "congo=t61rcWkgMzE", "x-b3-traceid": "463ac35c9f6413ad",
        "x-b3-spanid": "a2fb4a1d1a96d312",
        "x-b3-parentspanid": "0020000000000001", "x-b3-sampled": "1", "x-b3-flags": "1",
        "b3": "463ac35c9f6413ad-a2fb4a1d1a96d312-1", "x-ot-span-context": "ot", "x-datadog-trace-id": "1",
        "x-datadog-parent-id": "2", "x-datadog-sampling-priority": "1",
        "x-cloud-trace-context": "105445aa7/1",
        "grpc-trace-bin": "AAA", "sw8": "1-abc", "user-agent": "mizzen-test/1",
    }
    async with httpx.AsyncClient(trust_env=False) as c:
        await c.get(f"{app.url}/productpage", headers={**tracing, "x-private": "secret"})
    for host in ("details", "reviews"):
        (_h, _p, got), = fake_mesh.requests_to(host)
        for name, value in tracing.items():
            assert got.get(name) == value, (host, name)
        assert "x-private" not in got


async def test_details_and_reviews_unavailable_messages(
    start_app: Callable[..., AppProc], fake_mesh: FakeMesh
) -> None:
    fake_mesh.routes["details"] = json_handler({"x": 1}, status=503)
    fake_mesh.routes["reviews"] = json_handler({"x": 1}, status=500)
    app = start_app("productpage", env={"HTTP_PROXY": fake_mesh.proxy_url})
    async with httpx.AsyncClient(trust_env=False) as c:
        html = (await c.get(f"{app.url}/productpage")).text
        assert "Error fetching product details!" in html
        assert "Sorry, product details are currently unavailable for this book." in html
        assert "Error fetching product reviews!" in html
        assert "Sorry, product reviews are currently unavailable for this book." in html
        assert len(fake_mesh.requests_to("reviews")) == 2      # Istio's productpage tries reviews twice
        api = await c.get(f"{app.url}/api/v1/products/0")
        assert api.status_code == 503
        assert api.json() == {"error": "Sorry, product details are currently unavailable for this book."}
        rv = await c.get(f"{app.url}/api/v1/products/0/reviews")
        assert rv.status_code == 500
        assert rv.json() == {"error": "Sorry, product reviews are currently unavailable for this book."}
        # no route at all (the proxy answers 503) and no proxy answer at all (connection refused) -> 500
        ra = await c.get(f"{app.url}/api/v1/products/0/ratings")
        assert ra.status_code == 503
        assert ra.json() == {"error": "Sorry, product ratings are currently unavailable for this book."}


async def test_details_timeout_is_three_seconds(
    start_app: Callable[..., AppProc], fake_mesh: FakeMesh
) -> None:
    fake_mesh.routes["details"] = json_handler(book_details(0), delay=5.0)
    app = start_app("productpage", env={"HTTP_PROXY": fake_mesh.proxy_url})
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
        t0 = loop.time()
        r = await c.get(f"{app.url}/api/v1/products/0")
        took = loop.time() - t0
    assert r.status_code == 500
    assert 2.8 < took < 4.5


async def test_api_index_static_health(start_app: Callable[..., AppProc], fake_mesh: FakeMesh) -> None:
    _serve(fake_mesh)
    fake_mesh.routes["ratings"] = json_handler({"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
    app = start_app("productpage", env={"HTTP_PROXY": fake_mesh.proxy_url})
    async with httpx.AsyncClient(trust_env=False, base_url=app.url) as c:
        products = (await c.get("/api/v1/products")).json()
        assert products[0]["id"] == 0 and products[0]["title"] == "The Comedy of Errors"
        assert (await c.get("/api/v1/products/0")).json()["ISBN-10"] == "1234567890"
        assert (await c.get("/api/v1/products/0/reviews")).json()["podname"] == "reviews-v3-5998b9d9dd-g49vt"
        assert (await c.get("/api/v1/products/0/ratings")).json()["ratings"]["Reviewer1"] == 5
        index = await c.get("/")
        assert "simple bookstore application" in index.text and "http://reviews:9080" in index.text
        css = await c.get("/static/bookinfo.css")
        assert css.status_code == 200 and "glyphicon-star" in css.text
        assert (await c.get("/health")).text == "Product page is healthy"


async def test_no_proxy_listening_gives_500(start_app: Callable[..., AppProc]) -> None:
    app = start_app("productpage", env={"HTTP_PROXY": "http://127.77.250.250:15080"})
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.get(f"{app.url}/api/v1/products/0")
    assert r.status_code == 500


