"""Command line: ``python -m mizzen.bookinfo <productpage|details|reviews|ratings> [--version v2]``.

Listens on ``$HOST:$PORT`` (default 127.0.0.1:9080); a positional port (Istio's apps take one) overrides PORT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from aiohttp import web

from mizzen.bookinfo.common import serve
from mizzen.bookinfo.details import make_details_app
from mizzen.bookinfo.productpage import make_productpage_app
from mizzen.bookinfo.ratings import make_ratings_app
from mizzen.bookinfo.reviews import make_reviews_app

APPS = ("productpage", "details", "reviews", "ratings")


def build_app(name: str, version: str) -> web.Application:
    if name == "productpage":
        return make_productpage_app()
    if name == "details":
        return make_details_app()
    if name == "reviews":
        return make_reviews_app(version)
    return make_ratings_app()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mizzen.bookinfo", description="Run a Bookinfo service.")
    parser.add_argument("service", choices=APPS)
    parser.add_argument("port", nargs="?", type=int, help="listen port (default $PORT or 9080)")
    parser.add_argument("--version", default=os.environ.get("SERVICE_VERSION", "v1"), help="v1, v2 or v3")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format=f"%(asctime)s {args.service} %(levelname)s %(message)s"
    )
    host = os.environ.get("HOST") or "127.0.0.1"
    port = args.port or int(os.environ.get("PORT") or 9080)
    try:
        app = build_app(args.service, args.version)
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(serve(app, host, port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
