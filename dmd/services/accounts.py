"""Changes to users and API tokens, shared by the JSON API and the pages.

Unlike the other service modules these open their own transactions: each one hashes a
password outside the transaction where it needs to, records the audit entry and drops the
cached tokens afterwards, so that the API and the pages cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dmd.auth.cache import TokenCache
from dmd.auth.passwords import hash_password
from dmd.db import Database
from dmd.db.types import utcnow
from dmd.errors import Conflict
from dmd.models import ApiToken, User
from dmd.services import audit
from dmd.services import tokens as token_svc
from dmd.services import users as user_svc
from dmd.services.audit import Actor

# Fields where None means "leave as is"; the quotas take None as "no limit".
_NOT_NULLABLE = ("email", "username", "role", "disabled", "password")


async def create_user(
    db: Database,
    actor: Actor,
    *,
    email: str,
    password: str,
    role: str = "user",
    username: str | None = None,
    instance_limit: int | None = None,
    node_limit: int | None = None,
    gpu_limit: int | None = None,
) -> User:
    pw = await hash_password(password)
    async with db.begin() as conn:
        user = await user_svc.create(
            conn, email=email, password_hash=pw, role=role, username=username,
            instance_limit=instance_limit, node_limit=node_limit, gpu_limit=gpu_limit,
        )
        await audit.record(conn, actor, "user.create", "user", user.id, email=user.email, role=user.role)
    return user


async def update_user(
    db: Database, cache: TokenCache, actor: Actor, user_id: int, fields: dict[str, Any]
) -> User:
    """Apply the fields given (a "password" entry sets a new one and ends their sessions)."""
    changes = dict(fields)
    for k in _NOT_NULLABLE:
        if k in changes and changes[k] is None:
            del changes[k]
    new_pw = changes.pop("password", None)
    pw_hash = await hash_password(new_pw) if new_pw else None
    async with db.begin() as conn:
        before, after = await user_svc.update(conn, user_id, changes)
        if pw_hash:
            after = await user_svc.set_password(conn, user_id, pw_hash)
        diff = {
            k: [getattr(before, k), getattr(after, k)]
            for k in changes
            if getattr(before, k) != getattr(after, k)
        }
        if pw_hash:
            diff["password"] = ["(set)", "(set)"]
        action = "user.update"
        if changes.get("disabled") is True and not before.disabled:
            action = "user.disable"
        elif changes.get("disabled") is False and before.disabled:
            action = "user.enable"
        await audit.record(conn, actor, action, "user", user_id, changes=diff)
    cache.forget_user(user_id)
    return after


async def delete_user(db: Database, cache: TokenCache, actor: Actor, user_id: int) -> User:
    async with db.begin() as conn:
        gone = await user_svc.delete(conn, user_id)
        await audit.record(conn, actor, "user.delete", "user", user_id,
                           email=gone.email, username=gone.username)
    cache.forget_user(user_id)
    return gone


async def create_token(
    db: Database, actor: Actor, user_id: int, name: str, expires_in_days: int | None
) -> tuple[ApiToken, str]:
    """A new token of `user_id` and its secret (which is never stored)."""
    expires = utcnow() + dt.timedelta(days=expires_in_days) if expires_in_days else None
    async with db.begin() as conn:
        if await token_svc.count_for(conn, user_id) >= token_svc.MAX_TOKENS_PER_USER:
            raise Conflict(
                f"you have {token_svc.MAX_TOKENS_PER_USER} tokens; revoke one first",
                code="too_many_tokens",
            )
        tok, secret = await token_svc.create(conn, user_id, name, expires)
        await audit.record(conn, actor, "token.create", "token", tok.id, name=tok.name)
    return tok, secret


async def revoke_token(
    db: Database, cache: TokenCache, actor: Actor, user_id: int, token_id: int
) -> ApiToken:
    async with db.begin() as conn:
        tok = await token_svc.revoke(conn, user_id, token_id)
        await audit.record(conn, actor, "token.revoke", "token", tok.id, name=tok.name)
    cache.forget_token(token_id)
    return tok
