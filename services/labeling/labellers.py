"""Who may answer on the label page: password hashes, the users file, and answer rate limits.

Passwords are stored as scrypt hashes (``scrypt$N$r$p$salt$hash``, salt and hash in base64), one
``name:hash`` line per labeller in the users file (``eddy labellers add`` writes them). A sign-in
with an unknown name costs the same scrypt call as one with a wrong password, so timing does not
say which names exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from services.core.exceptions import ConfigurationError

#: scrypt cost: 32 MiB and about a tenth of a second a hash on a small server (OWASP's minimum,
#: N=2**17 at 128 MiB, took half a second here; a sign-in should not).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
#: Labeller names: what an Identifier allows, shorter (they become a Prometheus label value).
NAME = re.compile(r"^[A-Za-z0-9._\-@+]{1,64}$")
#: Keys a rate limit remembers before it forgets those back at a full allowance (memory bound).
MAX_TRACKED = 10_000
_DUMMY = None  # a hash to check unknown names against, made on first use


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password`` in the users file's format."""
    if not password:
        raise ValueError("an empty password")
    salt = os.urandom(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(
        ["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; a malformed hash never matches."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        got = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    if not (2 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Labellers:
    """The people who may sign in: name -> password hash."""

    def __init__(self, hashes: Mapping[str, str]) -> None:
        for name in hashes:
            if not NAME.fullmatch(name):
                raise ConfigurationError(
                    f"labeller name {name[:70]!r}: use 1-64 letters, digits or . _ - @ +"
                )
        self.hashes = dict(hashes)

    @classmethod
    def load(cls, path: Path | None, inline: Mapping[str, str]) -> Labellers:
        """The users of ``path`` (``name:hash`` lines, ``#`` comments) and of ``inline``."""
        hashes: dict[str, str] = {}
        if path is not None:
            try:
                text = path.read_text()
            except OSError as error:
                raise ConfigurationError(
                    f"labellers file {path}: cannot read it ({error.strerror}); create it with "
                    "`eddy labellers add NAME`"
                ) from None
            for number, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                name, colon, stored = line.partition(":")
                if not colon or not stored.startswith("scrypt$"):
                    raise ConfigurationError(
                        f"{path}:{number}: expected `name:scrypt$...` (from `eddy labellers add`)"
                    )
                hashes[name.strip()] = stored.strip()
        return cls({**hashes, **inline})

    def check(self, name: str, password: str) -> bool:
        """True when ``name`` exists and ``password`` is theirs (same cost either way)."""
        global _DUMMY
        stored = self.hashes.get(name)
        if stored is None:
            if _DUMMY is None:
                _DUMMY = hash_password("not a password anyone has")
            verify_password(password, _DUMMY)
            return False
        return verify_password(password, stored)

    def __bool__(self) -> bool:
        return bool(self.hashes)


def add_to_file(path: Path, name: str, password: str) -> bool:
    """Add or replace ``name`` in the users file (created 0600); True when it was replaced."""
    if not NAME.fullmatch(name):
        raise ValueError(f"labeller name {name[:70]!r}: use 1-64 letters, digits or . _ - @ +")
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line.partition(":")[0].strip() != name]
    kept.append(f"{name}:{hash_password(password)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write("\n".join(kept) + "\n")
    return len(kept) == len(lines)


class RateLimit:
    """At most ``per_minute`` actions per key, with bursts up to the same number (token bucket)."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> float:
        """0.0 when the action may go ahead (and is counted), else seconds until it may."""
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) > MAX_TRACKED:  # forget whoever has a full allowance again
                self._buckets = {
                    k: (t, at)
                    for k, (t, at) in self._buckets.items()
                    if t + (now - at) * self.rate < self.capacity
                }
            tokens, since = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - since) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
