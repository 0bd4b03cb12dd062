"""The web session's side of logging in and out and changing a password, shared by the JSON API
and the pages (the checks and the audit entries are dmd.usecases.auth)."""

from __future__ import annotations

from aiohttp import web
from aiohttp_session import get_session, new_session

from dmd.auth import csrf
from dmd.core import DM, Dm
from dmd.models import Actor, User
from dmd.net import client_ip
from dmd.state import Identity
from dmd.usecases import auth


def actor_of(request: web.Request, ident: Identity | None) -> Actor:
    return Actor(ident.user if ident else None, client_ip(request), None if ident else "anonymous")


async def start_session(request: web.Request, response: web.StreamResponse | None, user: User) -> str:
    """A fresh session (new id: no fixation) for `user`; returns its CSRF token."""
    session = await new_session(request)
    token = csrf.new_token(request.app[DM].session_secret)
    session["uid"] = user.id
    session["av"] = user.auth_version
    session["sk"] = user.session_key  # the user's never-reused key: an id alone is not enough
    session["csrf"] = token
    if response is not None:
        csrf.set_cookie(request, response, token)
    return token


async def login(dm: Dm, request: web.Request, email: str, password: str) -> User:
    return await auth.login(dm, email, password, client_ip(request))


async def logout(dm: Dm, request: web.Request, response: web.StreamResponse, ident: Identity | None) -> None:
    session = await get_session(request)
    session.invalidate()
    response.del_cookie(csrf.CSRF_COOKIE, path="/")
    if ident is not None:
        await auth.logged_out(dm, actor_of(request, ident), ident.user.id)


async def change_password(dm: Dm, request: web.Request, ident: Identity, current: str, new: str, *,
                          sign_out_everywhere: bool = True) -> User:
    user = await auth.change_password(dm, actor_of(request, ident), ident.user.id, current, new,
                                      sign_out_everywhere=sign_out_everywhere)
    if ident.via == "session":
        # Every other session ends; this one carries on under the new version and key.
        session = await get_session(request)
        session["av"] = user.auth_version
        session["sk"] = user.session_key
    return user


async def complete_setup(dm: Dm, request: web.Request, token: str, email: str, password: str,
                         username: str | None) -> User:
    return await auth.complete_setup(dm, token, email, password, username, client_ip(request))
