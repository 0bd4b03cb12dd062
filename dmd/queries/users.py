"""Users: creation, lookup, updates, deletion and the rules that keep at least one admin."""

from __future__ import annotations

import re
import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dmd.db.schema import instances, users
from dmd.db.types import utcnow
from dmd.errors import Conflict, Invalid, NotFound
from dmd.models import User, UserLimits

ROLES = ("admin", "user")
# What a new user may hold at once unless an administrator says otherwise (None: no limit).
# Plain users create nodes only when an administrator allows it; administrators have no node
# limit at all (see limits()).
DEFAULT_CEILINGS: dict[str, int | None] = {"port_map_limit": 20, "log_follow_limit": 4, "transfer_limit": 2}
CEILINGS = tuple(DEFAULT_CEILINGS)


def new_user_limits(role: str) -> dict[str, int | None]:
    """The quotas and ceilings a user created through the API, the pages or the CLI starts with."""
    return {"node_limit": None if role == "admin" else 0, **DEFAULT_CEILINGS}
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Deliberately plain: one @, no spaces or control characters, a dotted domain.
EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")


def normalise_email(email: str) -> str:
    e = email.strip().lower()
    if len(e) > 254 or not EMAIL_RE.match(e):
        raise Invalid(f"email: {email!r} is not an email address", field="email")
    return e


def check_username(username: str) -> str:
    u = username.strip().lower()
    if not USERNAME_RE.match(u):
        raise Invalid(
            "username: use 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
            field="username",
        )
    return u


def username_from_email(email: str) -> str:
    local = email.split("@", 1)[0].lower()
    base = re.sub(r"[^a-z0-9._-]+", "-", local).strip("._-")[:56]
    return base or "user"


async def _free_username(conn: AsyncConnection, base: str) -> str:
    taken = set(
        (
            await conn.execute(
                sa.select(users.c.username).where(users.c.username.startswith(base, autoescape=True))
            )
        ).scalars()
    )
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def new_session_key() -> str:
    return secrets.token_hex(16)


async def count(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one())


async def create(
    conn: AsyncConnection,
    *,
    email: str,
    password_hash: str,
    role: str = "user",
    username: str | None = None,
    instance_limit: int | None = None,
    node_limit: int | None = None,
    gpu_limit: int | None = None,
    port_map_limit: int | None = None,
    log_follow_limit: int | None = None,
    transfer_limit: int | None = None,
) -> User:
    email = normalise_email(email)
    if role not in ROLES:
        raise Invalid(f"role: must be one of {', '.join(ROLES)}", field="role")
    if username:
        username = check_username(username)
    else:
        username = await _free_username(conn, username_from_email(email))
    now = utcnow()
    try:
        async with conn.begin_nested():
            res = await conn.execute(
                users.insert().values(
                    email=email,
                    username=username,
                    password_hash=password_hash,
                    role=role,
                    disabled=False,
                    instance_limit=instance_limit,
                    node_limit=node_limit,
                    gpu_limit=gpu_limit,
                    port_map_limit=port_map_limit,
                    log_follow_limit=log_follow_limit,
                    transfer_limit=transfer_limit,
                    auth_version=1,
                    session_key=new_session_key(),
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError:
        if await get_by_email(conn, email) is not None:
            raise Conflict(f"a user with email {email} already exists", code="email_taken") from None
        raise Conflict(f"the username {username!r} is taken", code="username_taken") from None
    pk = res.inserted_primary_key
    assert pk is not None
    return await get(conn, int(pk[0]))


async def get(conn: AsyncConnection, user_id: int) -> User:
    row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
    if row is None:
        raise NotFound(f"no such user: {user_id}")
    return User.from_row(row)


async def find(conn: AsyncConnection, user_id: int) -> User | None:
    row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
    return None if row is None else User.from_row(row)


async def limits(conn: AsyncConnection, user_id: int) -> UserLimits:
    """What the user may hold at once, as stored now (administrators own nodes without limit).
    A user that does not exist (any more) may hold nothing."""
    row = (await conn.execute(
        sa.select(users.c.role, users.c.node_limit, users.c.port_map_limit, users.c.log_follow_limit,
                  users.c.transfer_limit).where(users.c.id == user_id)
    )).first()
    if row is None:
        return UserLimits(nodes=0, port_maps=0, log_follows=0, transfers=0)
    return UserLimits(nodes=None if row.role == "admin" else row.node_limit, port_maps=row.port_map_limit,
                      log_follows=row.log_follow_limit, transfers=row.transfer_limit)


async def get_by_email(conn: AsyncConnection, email: str) -> User | None:
    row = (await conn.execute(sa.select(users).where(users.c.email == email.strip().lower()))).first()
    return None if row is None else User.from_row(row)


async def get_by_username(conn: AsyncConnection, username: str) -> User | None:
    row = (await conn.execute(sa.select(users).where(users.c.username == username))).first()
    return None if row is None else User.from_row(row)


async def password_hash_for(conn: AsyncConnection, user_id: int) -> str:
    return str(
        (await conn.execute(sa.select(users.c.password_hash).where(users.c.id == user_id))).scalar_one()
    )


async def list_page(conn: AsyncConnection, *, limit: int, after_id: int | None = None) -> list[User]:
    q = sa.select(users).order_by(users.c.id).limit(limit)
    if after_id is not None:
        q = q.where(users.c.id > after_id)
    return [User.from_row(r) for r in (await conn.execute(q)).all()]


async def _lock(conn: AsyncConnection, user_id: int) -> User:
    """Read the user row for update (a row lock where the dialect has one)."""
    row = (await conn.execute(sa.select(users).where(users.c.id == user_id).with_for_update())).first()
    if row is None:
        raise NotFound(f"no such user: {user_id}")
    return User.from_row(row)


async def _lock_active_admins(conn: AsyncConnection) -> list[int]:
    """Lock every enabled admin's row, in id order, and return their ids. A change that could
    leave no admin takes these locks before its target's: two admins demoting each other at
    once then queue here, and the second sees the first's change (a locking read sees the
    latest commit), instead of each counting the other as an admin."""
    q = (
        sa.select(users.c.id)
        .where(users.c.role == "admin", users.c.disabled.is_(False))
        .order_by(users.c.id)
        .with_for_update()
    )
    return list((await conn.execute(q)).scalars())


async def update(conn: AsyncConnection, user_id: int, changes: dict[str, Any]) -> tuple[User, User]:
    """Apply `changes` (already validated names). Returns (before, after).

    Refuses to leave the system without an enabled admin. Disabling a user or changing
    their role ends their sessions (auth_version bump).
    """
    admins = await _lock_active_admins(conn)
    before = await _lock(conn, user_id)
    values = dict(changes)
    if "email" in values:
        values["email"] = normalise_email(values["email"])
    if "username" in values:
        values["username"] = check_username(values["username"])
    if "role" in values and values["role"] not in ROLES:
        raise Invalid(f"role: must be one of {', '.join(ROLES)}", field="role")
    loses_admin = before.is_admin and not before.disabled and (
        values.get("role", "admin") != "admin" or values.get("disabled", False)
    )
    if loses_admin and not [a for a in admins if a != user_id]:
        raise Conflict("this is the last enabled administrator; make another admin first", code="last_admin")
    if (values.get("disabled") and not before.disabled) or values.get("role", before.role) != before.role:
        values["auth_version"] = before.auth_version + 1
    if not values:
        return before, before
    values["updated_at"] = utcnow()
    try:
        async with conn.begin_nested():
            await conn.execute(users.update().where(users.c.id == user_id).values(**values))
    except IntegrityError:
        raise Conflict("that email or username is already in use", code="taken") from None
    return before, await get(conn, user_id)


async def set_password(conn: AsyncConnection, user_id: int, password_hash: str) -> User:
    """Store a new hash and end every existing session of the user."""
    before = await _lock(conn, user_id)
    await conn.execute(
        users.update()
        .where(users.c.id == user_id)
        .values(password_hash=password_hash, auth_version=before.auth_version + 1, updated_at=utcnow())
    )
    return await get(conn, user_id)


async def rotate_session_key(conn: AsyncConnection, user_id: int) -> User:
    """A new session key: every session and API token of the user stops answering at once."""
    await _lock(conn, user_id)
    await conn.execute(users.update().where(users.c.id == user_id)
                       .values(session_key=new_session_key(), updated_at=utcnow()))
    return await get(conn, user_id)


async def touch_login(conn: AsyncConnection, user_id: int) -> None:
    await conn.execute(users.update().where(users.c.id == user_id).values(last_login_at=utcnow()))


async def delete(conn: AsyncConnection, user_id: int) -> User:
    admins = await _lock_active_admins(conn)
    before = await _lock(conn, user_id)
    if before.is_admin and not before.disabled and not [a for a in admins if a != user_id]:
        raise Conflict("this is the last enabled administrator; make another admin first", code="last_admin")
    owned = (await conn.execute(sa.select(sa.func.count()).select_from(instances)
                                .where(instances.c.owner_id == user_id))).scalar_one()
    if owned:
        raise Conflict(f"{before.username} still has {owned} instance(s); delete them first", code="has_instances")
    await conn.execute(users.delete().where(users.c.id == user_id))
    return before
