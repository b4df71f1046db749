"""details, ratings and reviews as real processes on loopback, called over real HTTP; reviews reaches ratings
through a fake mesh proxy given as HTTP_PROXY (what the sidecar's http_proxy listener does in the local mode).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from bookinfo_helpers import AppProc, FakeMesh, json_handler


async def test_details_json_like_istio(start_app: Callable[..., AppProc]) -> None:
    app = start_app("details")
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.get(f"{app.url}/details/0")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == {
            "id": 0, "author": "William Shakespeare", "year": 1595, "type": "paperback", "pages": 200,
            "publisher": "PublisherA", "language": "English", "ISBN-10": "1234567890",
            "ISBN-13": "123-1234567890",
        }
        bad = await c.get(f"{app.url}/details/abc")
        assert bad.status_code == 400
        assert bad.json() == {"error": "please provide numeric product id"}
        health = await c.get(f"{app.url}/health")
        assert health.json() == {"status": "Details is healthy"}


async def test_ratings_get_post_health(start_app: Callable[..., AppProc]) -> None:
    app = start_app("ratings")
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.get(f"{app.url}/ratings/7")
        assert r.json() == {"id": 7, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
        p = await c.post(f"{app.url}/ratings/7", content=b'{"Reviewer1": 1}')
        assert p.json() == {"id": 7, "ratings": {"Reviewer1": 1}}
        assert (await c.get(f"{app.url}/ratings/7")).json()["ratings"] == {"Reviewer1": 1}
        assert (await c.get(f"{app.url}/ratings/x")).status_code == 400
        assert (await c.get(f"{app.url}/health")).json() == {"status": "Ratings is healthy"}


async def test_reviews_v1_has_no_ratings_and_never_calls_ratings(
    start_app: Callable[..., AppProc], fake_mesh: FakeMesh
) -> None:
    fake_mesh.routes["ratings"] = json_handler({"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
    app = start_app("reviews", "--version", "v1",
                    env={"HTTP_PROXY": fake_mesh.proxy_url, "POD_NAME": "reviews-v1-5b64f47978-abcde"})
    async with httpx.AsyncClient(trust_env=False) as c:
        body = (await c.get(f"{app.url}/reviews/0")).json()
    assert body["id"] == "0"
    assert body["podname"] == "reviews-v1-5b64f47978-abcde"
    assert "clustername" in body
    assert [r["reviewer"] for r in body["reviews"]] == ["Reviewer1", "Reviewer2"]
    assert all("rating" not in r and r["text"] for r in body["reviews"])
    assert fake_mesh.requests_to("ratings") == []


async def test_reviews_v2_black_v3_red_with_forwarded_headers(
    start_app: Callable[..., AppProc], fake_mesh: FakeMesh
) -> None:
    fake_mesh.routes["ratings"] = json_handler({"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
    v2 = start_app("reviews", "--version", "v2", env={"HTTP_PROXY": fake_mesh.proxy_url})
    v3 = start_app("reviews", "--version", "v3", env={"http_proxy": fake_mesh.proxy_url, "HOSTNAME": "rv3-x"})
    headers = {"x-request-id": "rid-1", "end-user": "jason", "x-b3-traceid": "abc",
               "traceparent": "00-t-s-01", "x-not-forwarded": "no"}
    async with httpx.AsyncClient(trust_env=False) as c:
        b2 = (await c.get(f"{v2.url}/reviews/0", headers=headers)).json()
        b3 = (await c.get(f"{v3.url}/reviews/0", headers=headers)).json()
    black = [{"stars": 5, "color": "black"}, {"stars": 4, "color": "black"}]
    red = [{"stars": 5, "color": "red"}, {"stars": 4, "color": "red"}]
    assert [r["rating"] for r in b2["reviews"]] == black
    assert [r["rating"] for r in b3["reviews"]] == red
    assert b3["podname"] == "rv3-x"
    calls = fake_mesh.requests_to("ratings")
    assert len(calls) == 2
    for _host, path, hdrs in calls:
        assert path == "/ratings/0"
        assert hdrs["x-request-id"] == "rid-1"
        assert hdrs["end-user"] == "jason"
        assert hdrs["x-b3-traceid"] == "abc"
        assert hdrs["traceparent"] == "00-t-s-01"
        assert "x-not-forwarded" not in hdrs


async def test_reviews_ratings_unavailable(start_app: Callable[..., AppProc], fake_mesh: FakeMesh) -> None:
    fake_mesh.routes["ratings"] = json_handler({"error": "boom"}, status=503)
    app = start_app("reviews", "--version", "v3", env={"HTTP_PROXY": fake_mesh.proxy_url})
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.get(f"{app.url}/reviews/0")
    assert r.status_code == 200
    assert [rv["rating"] for rv in r.json()["reviews"]] == [
        {"error": "Ratings service is currently unavailable"},
        {"error": "Ratings service is currently unavailable"},
    ]
