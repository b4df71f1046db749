"""Mizzen's credential model: one API token guards the control plane's API and every agent's admin proxy.

* :mod:`.token` owns the token itself: created once in the state dir (mode 0600, atomically), found by clients
  (``$MIZZEN_TOKEN``, a token file, or the state dir) and compared in constant time.
* :mod:`.guard` owns the HTTP side: an aiohttp middleware that checks ``Host`` (DNS rebinding), the bearer
  token, and for writes ``Origin`` (cross-site requests) and ``Content-Type: application/json``.

Later credentials (per-pod identities, the console's one-time token -> cookie) build on these two modules.
"""
