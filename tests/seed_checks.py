"""The seed's section 4 verdicts, shared by the local-mesh scenario tests (tests/e2e) and the Kubernetes walk
(tests/kube/test_kube_walk.py): each takes what was observed (answers counted by version, statuses, elapsed
time, a load summary) and asserts what the seed's scenario promises, whatever sent the requests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

# seed 4.3: the redirect target of /yunwei (bookinfo-vs-redirect-rewrite.yaml)
REDIRECT_LOCATION = "http://blog.csdn.net/weixin_43279138?type=blog"
# seed 4.2: what the Gateway publishes (exact /productpage, /login, /logout; prefix /static, /api/v1/products)
PUBLISHED_PATHS = ("/productpage", "/static/css/x.css", "/login", "/logout", "/api/v1/products/0")


def only(seen: Mapping[str, int], version: str, n: int) -> None:
    """Every one of ``n`` answers came from ``version``."""
    assert Counter(seen) == Counter({version: n}), seen


def canary_80_20(seen: Mapping[str, int], old: str = "v1", new: str = "v2") -> None:
    """Seed 4.4's 80/20 split, within 5 points over the requests counted (at least 1,000 for that bound)."""
    total = sum(seen.values())
    assert total >= 1000, seen
    assert set(seen) == {old, new}, seen
    assert 0.75 * total <= seen[old] <= 0.85 * total, seen
    assert 0.15 * total <= seen[new] <= 0.25 * total, seen


def round_robin(order: Sequence[str], versions: int = 3) -> None:
    """ROUND_ROBIN over ``versions`` endpoints: each window of that many answers in a row holds each once."""
    assert len(order) >= versions, order
    for i in range(len(order) - versions + 1):
        assert len(set(order[i:i + versions])) == versions, order


def redirected(status: int, location: str | None) -> None:
    """Seed 4.3's redirect of /yunwei."""
    assert status == 301, status
    assert location == REDIRECT_LOCATION, location


def delayed(status: int, elapsed: float, seconds: float) -> None:
    """Seed 4.8's fixedDelay (shortened to ``seconds``): a 200 that took that long, not much longer."""
    assert status == 200, status
    assert seconds <= elapsed < seconds + 2.0, elapsed


def aborted(status: int, body: str) -> None:
    """Seed 4.9's abort at 100 %: Envoy's fault filter answers 400 itself."""
    assert status == 400 and body == "fault filter abort", (status, body)


def aborted_half(seen: Mapping[str, int], ok: str = "v1") -> None:
    """Seed 4.9 at 50 %: about half the answers are the fault's 400 (within 20 points)."""
    total = sum(seen.values())
    assert set(seen) == {ok, "HTTP 400"}, seen
    assert 0.3 * total <= seen["HTTP 400"] <= 0.7 * total, seen


def circuit_broken(codes: Mapping[int, int], overflows: int, summary: str) -> None:
    """Seed 4.7's circuit breaking under concurrency: some 200s, the rest 503s that Envoy flagged as overflow
    (UO), and the summary says so as fortio does."""
    assert set(codes) == {200, 503} and codes[200] > 0 and codes[503] > 0, summary
    assert overflows == codes[503], summary
    assert f"Code 503 : {codes[503]} " in summary, summary
