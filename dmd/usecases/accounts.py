"""Users and API tokens: list, read, create, change, disable, delete, revoke.

Each change hashes a password outside the transaction where it needs to, records the audit
entry and drops the cached tokens afterwards.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dmd.auth.passwords import hash_password
from dmd.core import Dm
from dmd.db.types import utcnow
from dmd.errors import Conflict
from dmd.live import BY_WEB_SESSION
from dmd.models import Actor, ApiToken, User, UserLimits
from dmd.queries import audit
from dmd.queries import tokens as token_svc
from dmd.queries import users as user_svc

# Fields where None means "leave as is"; the quotas take None as "no limit".
_NOT_NULLABLE = ("email", "username", "role", "disabled", "password")
MAX_TOKENS_PER_USER = token_svc.MAX_TOKENS_PER_USER
# The quotas (instances, nodes, GPUs) and ceilings (held at once) an administrator sets per user.
LIMIT_FIELDS = ("instance_limit", "node_limit", "gpu_limit", *user_svc.CEILINGS)
new_user_limits = user_svc.new_user_limits


async def list_users(dm: Dm, *, limit: int, after_id: int | None = None) -> list[User]:
    async with dm.db.read() as conn:
        return await user_svc.list_page(conn, limit=limit, after_id=after_id)


async def get_user(dm: Dm, user_id: int) -> User:
    async with dm.db.read() as conn:
        return await user_svc.get(conn, user_id)


async def find_user(dm: Dm, user_id: int) -> User | None:
    async with dm.db.read() as conn:
        return await user_svc.find(conn, user_id)


async def create_user(
    dm: Dm,
    actor: Actor,
    *,
    email: str,
    password: str,
    role: str = "user",
    username: str | None = None,
    **limits: int | None,
) -> User:
    """A new user. Quotas and ceilings not given take `new_user_limits(role)`: plain users may
    create no node until an administrator allows it; a quota given as None means no limit."""
    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        raise TypeError(f"unknown limits: {sorted(unknown)}")
    values = {**user_svc.new_user_limits(role), **limits}
    pw = await hash_password(password)
    async with dm.db.begin() as conn:
        user = await user_svc.create(conn, email=email, password_hash=pw, role=role, username=username, **values)
        await audit.record(conn, actor, "user.create", "user", user.id, email=user.email, role=user.role)
    return user


async def limits(dm: Dm, user_id: int) -> UserLimits:
    """What the user may hold at once (for the per-user gates: log follows, transfers)."""
    async with dm.db.read() as conn:
        return await user_svc.limits(conn, user_id)


async def update_user(dm: Dm, actor: Actor, user_id: int, fields: dict[str, Any]) -> User:
    """Apply the fields given (a "password" entry sets a new one and ends their sessions)."""
    changes = dict(fields)
    for k in _NOT_NULLABLE:
        if k in changes and changes[k] is None:
            del changes[k]
    new_pw = changes.pop("password", None)
    pw_hash = await hash_password(new_pw) if new_pw else None
    async with dm.db.begin() as conn:
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
    dm.token_cache.forget_user(user_id)
    if after.disabled or before.role != after.role:
        # Disabled: nothing of theirs stays open. A new role: what they may use is decided again
        # at their next login or open.
        reason = "your account was disabled" if after.disabled else "your role changed"
        await dm.live.end_for_user(user_id, reason)
        dm.gateway.end_for_user(user_id, reason)
    elif pw_hash:
        await dm.live.end_for_user(user_id, "your password changed", vias=BY_WEB_SESSION)
    return after


async def delete_user(dm: Dm, actor: Actor, user_id: int) -> User:
    async with dm.db.begin() as conn:
        gone = await user_svc.delete(conn, user_id)
        await audit.record(conn, actor, "user.delete", "user", user_id,
                           email=gone.email, username=gone.username)
    dm.token_cache.forget_user(user_id)
    await dm.live.end_for_user(user_id, "your account was deleted")
    dm.gateway.end_for_user(user_id, "your account was deleted")
    return gone


async def list_tokens(dm: Dm, user_id: int, *, limit: int = MAX_TOKENS_PER_USER,
                      after_id: int | None = None) -> list[ApiToken]:
    async with dm.db.read() as conn:
        return await token_svc.list_for(conn, user_id, limit=limit, after_id=after_id)


async def create_token(
    dm: Dm, actor: Actor, user_id: int, name: str, expires_in_days: int | None
) -> tuple[ApiToken, str]:
    """A new token of `user_id` and its secret (which is never stored)."""
    expires = utcnow() + dt.timedelta(days=expires_in_days) if expires_in_days else None
    async with dm.db.begin() as conn:
        if await token_svc.count_for(conn, user_id) >= token_svc.MAX_TOKENS_PER_USER:
            raise Conflict(
                f"you have {token_svc.MAX_TOKENS_PER_USER} tokens; revoke one first",
                code="too_many_tokens",
            )
        tok, secret = await token_svc.create(conn, user_id, name, expires)
        await audit.record(conn, actor, "token.create", "token", tok.id, name=tok.name)
    return tok, secret


async def revoke_token(dm: Dm, actor: Actor, user_id: int, token_id: int) -> ApiToken:
    async with dm.db.begin() as conn:
        tok = await token_svc.revoke(conn, user_id, token_id)
        await audit.record(conn, actor, "token.revoke", "token", tok.id, name=tok.name)
    dm.token_cache.forget_token(token_id)
    return tok
