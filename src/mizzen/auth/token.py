"""The API token: created at first start in the state dir (``<state>/token``, mode 0600, written atomically),
read back by the control plane, the runner, agents and the CLI, and compared in constant time.

Clients find it in this order: ``$MIZZEN_TOKEN``; an explicit token file (``--token-file`` or
``$MIZZEN_TOKEN_FILE``); ``$MIZZEN_STATE_DIR/token``; ``~/.local/state/mizzen/token``. The token is a secret:
nothing here logs or prints it, and :func:`redact` is what error messages show instead.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from mizzen.atomicfile import write_atomic

__all__ = [
    "STATE_DIR_ENV",
    "TOKEN_ENV",
    "TOKEN_FILE",
    "TOKEN_FILE_ENV",
    "TokenError",
    "TokenSource",
    "default_state_dir",
    "ensure_token",
    "find_token",
    "new_token",
    "read_token",
    "token_matches",
]

TOKEN_ENV = "MIZZEN_TOKEN"
TOKEN_FILE_ENV = "MIZZEN_TOKEN_FILE"
STATE_DIR_ENV = "MIZZEN_STATE_DIR"
TOKEN_FILE = "token"
MIN_TOKEN_LEN = 16


class TokenError(RuntimeError):
    """The token file cannot be created or is unsafe to use (one clear line, no secret in it)."""


def default_state_dir() -> Path:
    """``$MIZZEN_STATE_DIR`` or ``~/.local/state/mizzen`` (the demo's and the CLI's default)."""
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env) if env else Path.home() / ".local" / "state" / "mizzen"


def new_token() -> str:
    """256 random bits, URL-safe (fits an ``Authorization: Bearer`` header as is)."""
    return secrets.token_urlsafe(32)


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison (``hmac.compare_digest``); ``None`` or an empty token never matches."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def read_token(path: Path) -> str | None:
    """The token in ``path`` (stripped), or None when the file does not exist or is unreadable."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def ensure_token(path: Path) -> str:
    """The token in ``path``, created first if missing: a new random token written to a private temp file
    (0600) and linked into place, so a reader never sees a partial file and two starters agree on one token.
    An existing file readable by group or others is tightened to 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        existing = _read_private(path)
        if existing is not None:
            return existing
        try:   # linked into place only if absent: if another starter won the race, use theirs
            if not write_atomic(path, (new_token() + "\n").encode(), replace=False):
                continue
        except OSError as e:
            raise TokenError(f"cannot create the API token file {path}: {e.strerror or e}") from None
    existing = _read_private(path)
    if existing is None:
        raise TokenError(f"cannot read the API token file {path}")
    return existing


def _read_private(path: Path) -> str | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise TokenError(f"cannot read the API token file {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise TokenError(f"the API token file {path} is not a regular file")
    if st.st_mode & 0o077:
        try:
            os.chmod(path, 0o600)
        except OSError as e:
            raise TokenError(f"the API token file {path} is readable by others and cannot be made private: "
                             f"{e.strerror or e}") from None
    token = read_token(path)
    if token is None:
        raise TokenError(f"the API token file {path} is empty or unreadable")
    if len(token) < MIN_TOKEN_LEN:
        raise TokenError(f"the API token in {path} is too short (at least {MIN_TOKEN_LEN} characters)")
    return token


@dataclass(frozen=True)
class TokenSource:
    """A client's token and where it came from (``where`` goes into error messages; the token never does)."""

    token: str | None
    where: str            # "$MIZZEN_TOKEN" or a file path
    looked: tuple[str, ...] = ()


def find_token(token_file: Path | str | None = None) -> TokenSource:
    """The client's token: ``$MIZZEN_TOKEN``, else ``token_file`` / ``$MIZZEN_TOKEN_FILE``, else
    ``<state dir>/token``. ``token`` is None when none is found (``looked`` lists the places)."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return TokenSource(env, f"${TOKEN_ENV}")
    explicit = token_file or os.environ.get(TOKEN_FILE_ENV) or None
    path = Path(explicit) if explicit else default_state_dir() / TOKEN_FILE
    return TokenSource(read_token(path), str(path), (f"${TOKEN_ENV}", str(path)))
