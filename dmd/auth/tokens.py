"""Secrets handed out once (API tokens, setup and join tokens) and stored only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_TOKEN_PREFIX = "dm_"  # noqa: S105 (a prefix, not a secret)


def new_secret(prefix: str = "", nbytes: int = 32) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def hash_secret(secret: str) -> str:
    # The secrets carry 256 random bits, so a fast hash is enough: there is nothing to
    # brute-force, and lookups by hash stay cheap on the hot path.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def looks_like_api_token(value: str) -> bool:
    return value.startswith(API_TOKEN_PREFIX) and 20 <= len(value) <= 100 and value.isascii()
