"""Who is calling, logging in and out, changing a password, first-run setup.

The web session itself (cookies, the CSRF token) is dmd.auth.flows'; these are the checks, the
password hashing, the login throttle and the audit entries behind it.
"""

from __future__ import annotations

import math

from dmd.auth.passwords import hash_password, needs_rehash, verify_password
from dmd.auth.tokens import hash_secret, looks_like_api_token
from dmd.core import Dm
from dmd.db.types import utcnow
from dmd.errors import Forbidden, TooManyRequests, Unauthorized
from dmd.models import Actor, User
from dmd.queries import audit, settings, setup, tokens, users
from dmd.state import Identity

WRONG_CREDENTIALS = "wrong email or password"
LAST_USED_EVERY = 300.0  # seconds between writes of a token's last_used_at


# --- who is calling ---------------------------------------------------------------------------

def _too_many(wait: float, what: str) -> TooManyRequests:
    return TooManyRequests(f"too many failed {what}; try again in {math.ceil(wait)} s",
                           extra={"retry_after": math.ceil(wait)})


def address_allowed(dm: Dm, ip: str) -> None:
    """429 while the client's address is held back by failed authentications."""
    wait = dm.throttle.retry_after([f"ip:{ip}"])
    if wait > 0:
        raise _too_many(wait, "authentications from your address")


def address_failed(dm: Dm, ip: str) -> None:
    """A failed authentication (a bad token or agent credential) counts against the address."""
    dm.throttle.failure([f"ip:{ip}"])


async def token_identity(dm: Dm, value: str, ip: str = "unknown") -> Identity:
    """The caller of a bearer token (cached briefly), or 401; a bad token counts against the
    client's address in the throttle (a 256-bit token cannot be guessed: this is about spraying
    garbage, so the check runs only on failures and valid tokens stay on the fast path)."""
    th = hash_secret(value)
    cache = dm.token_cache
    hit = cache.get(th)
    if hit is not None:
        return Identity(hit[0], "token", hit[1])
    address_allowed(dm, ip)
    if not looks_like_api_token(value):
        address_failed(dm, ip)
        raise Unauthorized("invalid API token")
    db = dm.db
    async with db.read() as conn:
        found = await tokens.lookup(conn, th)
    if found is None:
        address_failed(dm, ip)
        raise Unauthorized("invalid, expired or revoked API token")
    user, tok = found
    cache.put(th, user, tok.id, tok.expires_at.timestamp() if tok.expires_at else None)
    now = utcnow()
    if tok.last_used_at is None or (now - tok.last_used_at).total_seconds() > LAST_USED_EVERY:
        async with db.begin() as conn:
            await tokens.mark_used(conn, [tok.id], now)
    return Identity(user, "token", tok.id)


async def session_user(dm: Dm, user_id: int) -> User | None:
    """The user a session names (None when deleted meanwhile)."""
    async with dm.db.read() as conn:
        return await users.find(conn, user_id)


# --- log in and out, passwords ------------------------------------------------------------------

async def login(dm: Dm, email: str, password: str, ip: str) -> User:
    """The user with this email and password; failures count towards the throttle (per account
    and per client address) and are audited."""
    email = email.strip().lower()
    keys = [f"acct:{email}", f"ip:{ip}"]
    throttle = dm.throttle
    # Counted before the check (see dmd.auth.throttle): parallel guesses cannot all be checked.
    wait = throttle.reserve(keys)
    if wait > 0:
        raise _too_many(wait, "logins")
    db = dm.db
    async with db.read() as conn:
        user = await users.get_by_email(conn, email)
        stored = await users.password_hash_for(conn, user.id) if user else None
    # The password is checked for a disabled account too, and the answer is the same as for a
    # wrong one: the reply and its timing do not tell which accounts exist or are disabled.
    ok = await verify_password(stored, password)
    if not ok or user is None or user.disabled:
        async with db.begin() as conn:
            await audit.record(conn, Actor(None, ip, "anonymous"), "auth.login_failed", "user",
                               user.id if user else None, email=email[:254],
                               **({"disabled": True} if user is not None and user.disabled else {}))
        raise Unauthorized(WRONG_CREDENTIALS, code="bad_credentials")
    throttle.succeeded(keys)
    new_hash = await hash_password(password) if stored and needs_rehash(stored) else None
    async with db.begin() as conn:
        await users.touch_login(conn, user.id)
        if new_hash:
            await users.set_password(conn, user.id, new_hash)
            user = await users.get(conn, user.id)
        await audit.record(conn, Actor(user, ip), "auth.login", "user", user.id)
    return user


async def logged_out(dm: Dm, actor: Actor, user_id: int) -> None:
    async with dm.db.begin() as conn:
        await audit.record(conn, actor, "auth.logout", "user", user_id)


async def change_password(dm: Dm, actor: Actor, user_id: int, current: str, new: str, *,
                          sign_out_everywhere: bool = True) -> User:
    """A new password for the caller, who gives the current one; every session of theirs ends
    (the caller's own carries on: see dmd.auth.flows). With `sign_out_everywhere` every API token
    of theirs is revoked too and their session key changes (nothing made before still answers).
    A wrong current password counts against the address and this account's password checks."""
    keys = [f"ip:{actor.ip or 'unknown'}", f"pw:{user_id}"]
    wait = dm.throttle.reserve(keys)
    if wait > 0:
        raise _too_many(wait, "password checks")
    db = dm.db
    async with db.read() as conn:
        stored = await users.password_hash_for(conn, user_id)
    if not await verify_password(stored, current):
        raise Forbidden("the current password is wrong", code="bad_credentials")
    dm.throttle.succeeded(keys)
    new_hash = await hash_password(new)
    async with db.begin() as conn:
        user = await users.set_password(conn, user_id, new_hash)
        revoked = 0
        if sign_out_everywhere:
            revoked = await tokens.revoke_all(conn, user_id)
            user = await users.rotate_session_key(conn, user_id)
        await audit.record(conn, actor, "user.password_change", "user", user.id,
                           signed_out_everywhere=sign_out_everywhere, tokens_revoked=revoked)
    dm.token_cache.forget_user(user.id)
    return user


# --- first run ----------------------------------------------------------------------------------

async def setup_pending(dm: Dm) -> bool:
    """No user yet, and a setup link was issued."""
    async with dm.db.read() as conn:
        return await users.count(conn) == 0 and await settings.get(conn, setup.KEY) is not None


async def setup_state(dm: Dm, token: str) -> str:
    """What the setup page shows: done, need_link, form or bad_link."""
    async with dm.db.read() as conn:
        if await users.count(conn) > 0:
            return "done"
        if not token:
            return "need_link"
        return "form" if await setup.is_valid(conn, token) else "bad_link"


async def complete_setup(dm: Dm, token: str, email: str, password: str, username: str | None, ip: str) -> User:
    """The first administrator, made with the one-time setup token (which is used up)."""
    pw_hash = await hash_password(password)
    async with dm.db.begin() as conn:
        await setup.consume(conn, token)
        user = await users.create(conn, email=email, password_hash=pw_hash, role="admin", username=username)
        # Setting up logs the administrator in: it is their first login (not "never").
        await users.touch_login(conn, user.id)
        await audit.record(conn, Actor(user, ip), "setup.complete", "user", user.id)
    return user


# --- the service itself -------------------------------------------------------------------------

async def health(dm: Dm) -> str:
    """The database answers; its dialect."""
    async with dm.db.read() as conn:
        await conn.exec_driver_sql("SELECT 1")
    return dm.db.dialect
