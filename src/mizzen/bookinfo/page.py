"""HTML rendering for productpage: the product page (details, reviews with stars, sign-in) and the index page,
laid out like Istio's templates (``glyphicon-star`` spans inside ``<font color=...>``), from ``templates/``.
"""

from __future__ import annotations

import json
from functools import cache
from html import escape
from importlib import resources
from string import Template
from typing import Any

PRODUCTS: tuple[dict[str, Any], ...] = (
    {
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">'
        "Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. "
        "It is his shortest and one "
        "of his most farcical comedies, with a major part of the humour coming from slapstick and mistaken "
        "identity, in addition to puns and word play.",
    },
)


@cache
def template(name: str) -> Template:
    return Template(resources.files("mizzen.bookinfo").joinpath("templates", name).read_text("utf-8"))


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _user_block(user: str) -> str:
    if user:
        return (
            '    <p class="navbar-text navbar-right">\n'
            '      <i class="glyphicon glyphicon-user" aria-hidden="true"></i>\n'
            f'      <span style="padding-left: 5px;">{_e(user)} ( <a href="logout">sign out</a> )</span>\n'
            "    </p>"
        )
    return '    <a class="btn btn-default navbar-btn navbar-right" href="#login-modal">Sign in</a>'


def _details_block(status: int, details: dict[str, Any]) -> str:
    if status == 200:
        rows = "".join(
            f"        <dt>{label}:</dt>{_e(details.get(key))}\n"
            for label, key in (
                ("Type", "type"),
                ("Pages", "pages"),
                ("Publisher", "publisher"),
                ("Language", "language"),
                ("ISBN-10", "ISBN-10"),
                ("ISBN-13", "ISBN-13"),
            )
        )
        return f'      <h4 class="text-center text-primary">Book Details</h4>\n      <dl>\n{rows}      </dl>'
    return (
        '      <h4 class="text-center text-primary">Error fetching product details!</h4>\n'
        f"      <p>{_e(details.get('error'))}</p>"
    )


def _stars(rating: dict[str, Any]) -> str:
    stars = rating.get("stars")
    if isinstance(stars, int) and stars:
        n = max(0, min(5, stars))
        full = '          <span class="glyphicon glyphicon-star"></span>\n' * n
        empty = '          <span class="glyphicon glyphicon-star-empty"></span>\n' * (5 - n)
        return (
            f'        <font color="{_e(rating.get("color"))}">\n          <!-- full stars: -->\n{full}'
            f"          <!-- empty stars: -->\n{empty}        </font>\n"
        )
    if rating.get("error"):
        return f"        <p><i>{_e(rating['error'])}</i></p>\n"
    return ""


def _reviews_block(status: int, reviews: dict[str, Any]) -> str:
    if status != 200:
        return (
            '      <h4 class="text-center text-primary">Error fetching product reviews!</h4>\n'
            f"      <p>{_e(reviews.get('error'))}</p>"
        )
    parts = ['      <h4 class="text-center text-primary">Book Reviews</h4>\n']
    for review in reviews.get("reviews") or []:
        rating = review.get("rating")
        parts.append(
            "      <blockquote>\n"
            f"        <p>{_e(review.get('text'))}</p>\n"
            f"        <small>{_e(review.get('reviewer'))}</small>\n"
            f"{_stars(rating) if isinstance(rating, dict) else ''}"
            "      </blockquote>\n"
        )
    if reviews.get("podname"):
        parts.append("      <dl>\n        <dt>Reviews served by:</dt>\n")
        parts.append(f"        <u>{_e(reviews['podname'])}</u>\n      </dl>\n")
    return "".join(parts).rstrip("\n")


def render_productpage(
    product: dict[str, Any],
    details_status: int,
    details: dict[str, Any],
    reviews_status: int,
    reviews: dict[str, Any],
    user: str,
) -> str:
    return template("productpage.html").substitute(
        user_block=_user_block(user),
        title=_e(product["title"]),
        description=product["descriptionHtml"],   # trusted HTML, like Istio's autoescape false
        details_block=_details_block(details_status, details),
        reviews_block=_reviews_block(reviews_status, reviews),
    )


def _json_table(value: Any) -> str:
    """A nested HTML table of JSON data (what Istio's index page builds with json2html)."""
    if isinstance(value, dict):
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_json_table(v)}</td></tr>" for k, v in value.items())
        return f'<table class="table table-condensed table-bordered table-hover">{rows}</table>'
    if isinstance(value, list):
        return "<ul>" + "".join(f"<li>{_json_table(v)}</li>" for v in value) + "</ul>" if value else ""
    return _e(value)


def render_index(topology: dict[str, Any]) -> str:
    return template("index.html").substitute(service_table=_json_table(json.loads(json.dumps(topology))))
