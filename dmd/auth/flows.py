"""Log in, log out, change a password, finish setup: shared by the JSON API and the pages."""

from __future__ import annotations

import math

from aiohttp import web
from aiohttp_session import get_session, new_session

from dmd.auth import csrf
from dmd.auth.passwords import hash_password, needs_rehash, verify_password
from dmd.core import DM
from dmd.errors import Forbidden, TooManyRequests, Unauthorized
from dmd.models import User
from dmd.net import client_ip
from dmd.services import audit, setup, users
from dmd.services.audit import Actor
from dmd.state import Identity

WRONG_CREDENTIALS = "wrong email or password"


def actor_of(request: web.Request, ident: Identity | None) -> Actor:
    return Actor(ident.user if ident else None, client_ip(request), None if ident else "anonymous")


async def start_session(request: web.Request, response: web.StreamResponse | None, user: User) -> str:
    """A fresh session (new id: no fixation) for `user`; returns its CSRF token."""
    session = await new_session(request)
    token = csrf.new_token()
    session["uid"] = user.id
    session["av"] = user.auth_version
    session["csrf"] = token
    if response is not None:
        csrf.set_cookie(request, response, token)
    return token


async def login(request: web.Request, email: str, password: str) -> User:
    ip = client_ip(request)
    email = email.strip().lower()
    acct_key, ip_key = f"acct:{email}", f"ip:{ip}"
    throttle = request.app[DM].throttle
    wait = throttle.retry_after([acct_key, ip_key])
    if wait > 0:
        raise TooManyRequests(
            f"too many failed logins; try again in {math.ceil(wait)} s",
            extra={"retry_after": math.ceil(wait)},
        )
    db = request.app[DM].db
    async with db.read() as conn:
        user = await users.get_by_email(conn, email)
        stored = await users.password_hash_for(conn, user.id) if user else None
    ok = await verify_password(stored, password)
    if not ok or user is None:
        throttle.failure([acct_key, ip_key])
        async with db.begin() as conn:
            await audit.record(conn, Actor(None, ip, "anonymous"), "auth.login_failed", "user",
                               user.id if user else None, email=email[:254])
        raise Unauthorized(WRONG_CREDENTIALS, code="bad_credentials")
    if user.disabled:
        raise Forbidden("this account is disabled; ask an administrator", code="account_disabled")
    throttle.success(acct_key)
    new_hash = await hash_password(password) if stored and needs_rehash(stored) else None
    async with db.begin() as conn:
        await users.touch_login(conn, user.id)
        if new_hash:
            await users.set_password(conn, user.id, new_hash)
            user = await users.get(conn, user.id)
        await audit.record(conn, Actor(user, ip), "auth.login", "user", user.id)
    return user


async def logout(request: web.Request, response: web.StreamResponse, ident: Identity | None) -> None:
    session = await get_session(request)
    session.invalidate()
    response.del_cookie(csrf.CSRF_COOKIE, path="/")
    if ident is not None:
        async with request.app[DM].db.begin() as conn:
            await audit.record(conn, actor_of(request, ident), "auth.logout", "user", ident.user.id)


async def change_password(request: web.Request, ident: Identity, current: str, new: str) -> User:
    db = request.app[DM].db
    async with db.read() as conn:
        stored = await users.password_hash_for(conn, ident.user.id)
    if not await verify_password(stored, current):
        raise Forbidden("the current password is wrong", code="bad_credentials")
    new_hash = await hash_password(new)
    async with db.begin() as conn:
        user = await users.set_password(conn, ident.user.id, new_hash)
        await audit.record(conn, actor_of(request, ident), "user.password_change", "user", user.id)
    request.app[DM].token_cache.forget_user(user.id)
    if ident.via == "session":
        # Every other session ends; this one carries on under the new version.
        session = await get_session(request)
        session["av"] = user.auth_version
    return user


async def complete_setup(
    request: web.Request, token: str, email: str, password: str, username: str | None
) -> User:
    pw_hash = await hash_password(password)
    async with request.app[DM].db.begin() as conn:
        await setup.consume(conn, token)
        user = await users.create(conn, email=email, password_hash=pw_hash, role="admin", username=username)
        await audit.record(conn, Actor(user, client_ip(request)), "setup.complete", "user", user.id)
    return user
