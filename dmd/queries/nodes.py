"""Compute nodes: creation with a join token, joining, credentials, visibility and sharing."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dmd.auth.tokens import hash_secret, new_secret
from dmd.db.schema import node_shares, nodes, users
from dmd.db.types import utcnow
from dmd.errors import ApiError, Conflict, Forbidden, Invalid, NotFound
from dmd.models import Node, User

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
JOIN_PREFIX = "dmj_"
CREDENTIAL_PREFIX = "dmn_"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise Invalid(
            "name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", field="name"
        )
    return name


def name_from_hostname(hostname: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", hostname).strip("._-")[:56]
    return base or "node"


async def get(conn: AsyncConnection, node_id: int) -> Node:
    row = (await conn.execute(sa.select(nodes).where(nodes.c.id == node_id))).first()
    if row is None:
        raise NotFound(f"no such node: {node_id}")
    return Node.from_row(row)


def trusted_clause() -> sa.ColumnElement[bool]:
    """Nodes owned by an administrator or by the installation (no owner)."""
    admins = sa.select(users.c.id).where(users.c.role == "admin")
    return sa.or_(nodes.c.owner_id.is_(None), nodes.c.owner_id.in_(admins))


def provided_clause() -> sa.ColumnElement[bool]:
    """Nodes an administrator provides for everyone: marked public, and owned by an admin or by
    the installation (a public flag left on a node whose owner lost the admin role counts for
    nothing: a plain user's agent never gets others' instances through it)."""
    return sa.and_(nodes.c.public.is_(True), trusted_clause())


def usable_clause(user: User) -> sa.ColumnElement[bool]:
    """The nodes a plain user may see and place instances on (by name or automatically): their
    own, those shared with them that they accepted, and those provided for everyone. A pending
    share gives nothing: the node's owner alone cannot send anyone's instances (and secrets)
    to an agent they run."""
    accepted = sa.select(node_shares.c.node_id).where(node_shares.c.user_id == user.id,
                                                      node_shares.c.accepted_at.is_not(None))
    return sa.or_(nodes.c.owner_id == user.id, nodes.c.id.in_(accepted), provided_clause())


async def get_visible(conn: AsyncConnection, user: User, node_id: int) -> Node:
    """The node if `user` may see it; otherwise 404 (never reveal that it exists)."""
    q = sa.select(nodes).where(nodes.c.id == node_id)
    if not user.is_admin:
        q = q.where(usable_clause(user))
    row = (await conn.execute(q)).first()
    if row is None:
        raise NotFound(f"no such node: {node_id}")
    return Node.from_row(row)


async def get_manageable(conn: AsyncConnection, user: User, node_id: int) -> Node:
    """The node if `user` owns it or is an admin; 403 for users it is only shared with."""
    node = await get_visible(conn, user, node_id)
    if not user.is_admin and node.owner_id != user.id:
        raise Forbidden("only the node's owner or an administrator can do this")
    return node


async def list_visible(conn: AsyncConnection, user: User, *, limit: int, after_id: int | None) -> list[Node]:
    q = sa.select(nodes).order_by(nodes.c.id).limit(limit)
    if not user.is_admin:
        q = q.where(usable_clause(user))
    if after_id is not None:
        q = q.where(nodes.c.id > after_id)
    return [Node.from_row(r) for r in (await conn.execute(q)).all()]


async def _check_node_limit(conn: AsyncConnection, owner: User) -> None:
    # Lock the owner's row so parallel creations queue here and the count stays true.
    limit = (
        await conn.execute(sa.select(users.c.node_limit).where(users.c.id == owner.id).with_for_update())
    ).scalar_one()
    if limit is None or owner.is_admin:
        return
    owned = (
        await conn.execute(sa.select(sa.func.count()).select_from(nodes).where(nodes.c.owner_id == owner.id))
    ).scalar_one()
    if limit == 0:
        raise ApiError("you may not create nodes: an administrator must allow it (raise your node quota)",
                       status=403, code="quota_exceeded")
    if owned >= limit:
        raise ApiError(f"you may own at most {limit} node(s); delete one or ask an administrator",
                       status=403, code="quota_exceeded")


async def create(
    conn: AsyncConnection, *, name: str, owner: User | None, join_ttl_s: int, local: bool = False
) -> tuple[Node, str]:
    """A pending node and its one-time join token."""
    check_name(name)
    if owner is not None:
        await _check_node_limit(conn, owner)
    token = new_secret(JOIN_PREFIX)
    now = utcnow()
    try:
        async with conn.begin_nested():
            res = await conn.execute(
                nodes.insert().values(
                    name=name, owner_id=owner.id if owner else None, status="pending", cordoned=False,
                    local=local, join_token_hash=hash_secret(token),
                    join_expires_at=now + dt.timedelta(seconds=join_ttl_s), created_at=now, updated_at=now,
                )
            )
    except IntegrityError:
        raise Conflict(f"a node named {name!r} already exists", code="name_taken") from None
    pk = res.inserted_primary_key
    assert pk is not None
    return await get(conn, int(pk[0])), token


async def new_join_token(conn: AsyncConnection, node_id: int, join_ttl_s: int) -> tuple[Node, str]:
    token = new_secret(JOIN_PREFIX)
    now = utcnow()
    await conn.execute(
        nodes.update().where(nodes.c.id == node_id).values(
            join_token_hash=hash_secret(token), join_expires_at=now + dt.timedelta(seconds=join_ttl_s),
            updated_at=now,
        )
    )
    return await get(conn, node_id), token


class JoinRefused(ApiError):
    pass


async def join(conn: AsyncConnection, token: str) -> tuple[Node, str]:
    """Trade a join token for the node's long-lived credential (the token is used up)."""
    row = (
        await conn.execute(
            sa.select(nodes).where(nodes.c.join_token_hash == hash_secret(token)).with_for_update()
        )
    ).first()
    if row is None:
        raise JoinRefused("this join token is unknown or was already used; create a new one on the node's page",
                          status=403, code="join_token_invalid")
    node = Node.from_row(row)
    if node.join_expires_at is None or node.join_expires_at <= utcnow():
        raise JoinRefused("this join token has expired; create a new one on the node's page",
                          status=410, code="join_token_expired")
    credential = new_secret(CREDENTIAL_PREFIX)
    status = "offline" if node.status == "pending" else node.status
    await conn.execute(
        nodes.update().where(nodes.c.id == node.id).values(
            credential_hash=hash_secret(credential), join_token_hash=None, join_expires_at=None,
            status=status, updated_at=utcnow(),
        )
    )
    return await get(conn, node.id), credential


async def by_credential(conn: AsyncConnection, credential: str) -> Node | None:
    if not credential.startswith(CREDENTIAL_PREFIX) or len(credential) > 100:
        return None
    row = (await conn.execute(sa.select(nodes).where(nodes.c.credential_hash == hash_secret(credential)))).first()
    return None if row is None else Node.from_row(row)


async def set_credential(conn: AsyncConnection, node_id: int, credential: str | None) -> None:
    await conn.execute(
        nodes.update().where(nodes.c.id == node_id).values(
            credential_hash=hash_secret(credential) if credential else None, updated_at=utcnow()
        )
    )


async def update(conn: AsyncConnection, node_id: int, **values: Any) -> Node:
    if "name" in values:
        check_name(values["name"])
    values["updated_at"] = utcnow()
    try:
        async with conn.begin_nested():
            await conn.execute(nodes.update().where(nodes.c.id == node_id).values(**values))
    except IntegrityError:
        raise Conflict(f"a node named {values.get('name')!r} already exists", code="name_taken") from None
    return await get(conn, node_id)


async def mark_online(
    conn: AsyncConnection, node_id: int, *, facts: dict[str, Any], agent_version: str, protocol: int
) -> None:
    now = utcnow()
    await conn.execute(
        nodes.update().where(nodes.c.id == node_id).values(
            status="online", facts=json.dumps(facts), agent_version=agent_version, protocol_version=protocol,
            connected_at=now, last_seen=now, updated_at=now,
        )
    )


async def mark_offline(conn: AsyncConnection, node_id: int, last_seen: dt.datetime) -> None:
    await conn.execute(
        nodes.update().where(nodes.c.id == node_id, nodes.c.status == "online").values(
            status="offline", last_seen=last_seen
        )
    )


async def store_facts(conn: AsyncConnection, node_id: int, facts: dict[str, Any]) -> None:
    await conn.execute(nodes.update().where(nodes.c.id == node_id).values(facts=json.dumps(facts)))


async def touch(conn: AsyncConnection, seen: dict[int, dt.datetime]) -> None:
    """Record last_seen for many nodes in one executemany (one round trip to the driver)."""
    if seen:
        stmt = nodes.update().where(nodes.c.id == sa.bindparam("nid")).values(last_seen=sa.bindparam("seen"))
        await conn.execute(stmt, [{"nid": nid, "seen": when} for nid, when in seen.items()])


async def reset_online(conn: AsyncConnection) -> None:
    """At start no agent is connected to this process yet."""
    await conn.execute(nodes.update().where(nodes.c.status == "online").values(status="offline"))


async def delete(conn: AsyncConnection, node_id: int) -> None:
    from dmd.db.schema import instances

    held = (await conn.execute(sa.select(sa.func.count()).select_from(instances)
                               .where(instances.c.node_id == node_id))).scalar_one()
    if held:
        raise Conflict(f"the node still has {held} instance(s); delete them first", code="has_instances")
    await conn.execute(nodes.delete().where(nodes.c.id == node_id))


async def local_node(conn: AsyncConnection) -> Node | None:
    row = (await conn.execute(sa.select(nodes).where(nodes.c.local.is_(True)).limit(1))).first()
    return None if row is None else Node.from_row(row)


# --- sharing ------------------------------------------------------------------------

def _share_out(r: Any, *, with_email: bool) -> dict[str, Any]:
    return {"user_id": r.id, "username": r.username, "email": r.email if with_email else None,
            "state": "accepted" if r.accepted_at is not None else "pending",
            "created_at": r.created_at, "accepted_at": r.accepted_at}


async def shares(conn: AsyncConnection, node_id: int, *, with_email: bool = False) -> list[dict[str, Any]]:
    """The node's shares, pending and accepted (emails only for administrators' eyes)."""
    q = (
        sa.select(users.c.id, users.c.username, users.c.email, node_shares.c.created_at, node_shares.c.accepted_at)
        .join(users, users.c.id == node_shares.c.user_id)
        .where(node_shares.c.node_id == node_id)
        .order_by(users.c.username)
    )
    return [_share_out(r, with_email=with_email) for r in (await conn.execute(q)).all()]


async def share(conn: AsyncConnection, node: Node, user: User) -> None:
    """Offer the node to `user`: pending until they accept it."""
    if user.id == node.owner_id:
        raise Conflict(f"{user.username} owns this node already", code="is_owner")
    try:
        async with conn.begin_nested():
            await conn.execute(node_shares.insert().values(node_id=node.id, user_id=user.id, created_at=utcnow(),
                                                           accepted_at=None))
    except IntegrityError:
        raise Conflict(f"the node is already shared with {user.username}", code="already_shared") from None


async def unshare(conn: AsyncConnection, node_id: int, user_id: int) -> None:
    res = await conn.execute(
        node_shares.delete().where(node_shares.c.node_id == node_id, node_shares.c.user_id == user_id)
    )
    if res.rowcount == 0:
        raise NotFound(f"the node is not shared with user {user_id}")


def _no_share(node_id: int) -> NotFound:
    return NotFound(f"no node {node_id} is shared with you", code="no_share")


async def accept(conn: AsyncConnection, user: User, node_id: int) -> None:
    """The recipient accepts a pending share (accepting twice changes nothing)."""
    res = await conn.execute(
        node_shares.update()
        .where(node_shares.c.node_id == node_id, node_shares.c.user_id == user.id,
               node_shares.c.accepted_at.is_(None))
        .values(accepted_at=utcnow())
    )
    if res.rowcount == 0 and not await _has_share(conn, user.id, node_id):
        raise _no_share(node_id)


async def leave(conn: AsyncConnection, user: User, node_id: int) -> bool:
    """The recipient declines a pending share or leaves an accepted one; True if it was accepted."""
    row = (await conn.execute(sa.select(node_shares.c.accepted_at).where(
        node_shares.c.node_id == node_id, node_shares.c.user_id == user.id))).first()
    if row is None:
        raise _no_share(node_id)
    await conn.execute(node_shares.delete().where(node_shares.c.node_id == node_id,
                                                  node_shares.c.user_id == user.id))
    return row.accepted_at is not None


async def _has_share(conn: AsyncConnection, user_id: int, node_id: int) -> bool:
    return (await conn.execute(sa.select(node_shares.c.node_id).where(
        node_shares.c.node_id == node_id, node_shares.c.user_id == user_id))).first() is not None


async def shared_with(conn: AsyncConnection, user: User) -> list[dict[str, Any]]:
    """The shares offered to `user`, pending and accepted, with each node's name and owner."""
    owner = users.alias("owner")
    q = (
        sa.select(nodes.c.id, nodes.c.name, owner.c.username.label("owner"), node_shares.c.created_at,
                  node_shares.c.accepted_at)
        .join(nodes, nodes.c.id == node_shares.c.node_id)
        .outerjoin(owner, owner.c.id == nodes.c.owner_id)
        .where(node_shares.c.user_id == user.id)
        .order_by(nodes.c.name)
    )
    return [{"node_id": r.id, "node_name": r.name, "owner": r.owner,
             "state": "accepted" if r.accepted_at is not None else "pending",
             "created_at": r.created_at, "accepted_at": r.accepted_at}
            for r in (await conn.execute(q)).all()]


def _unknown_user(username: str) -> Invalid:
    return Invalid(f"username: no user {username!r} can be given this node; check the exact username",
                   field="username", code="unknown_user")


async def find_share_target(conn: AsyncConnection, sharer: User, username: str | None,
                            user_id: int | None) -> User:
    """Whom a node is shared with. Plain users name them by exact username only, and an unknown
    and a disabled account answer alike (nothing to learn about who exists by trying names or
    ids); administrators may also give an id."""
    if user_id is not None:
        if not sharer.is_admin:
            raise Invalid("user_id: share by username (only administrators may give a user id)", field="user_id",
                          code="username_required")
        row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
        if row is None or row.disabled:
            raise Invalid(f"user_id: no such user {user_id}", field="user_id", code="unknown_user")
        return User.from_row(row)
    name = username or ""
    row = (await conn.execute(sa.select(users).where(users.c.username == name))).first()
    if row is None or row.disabled:
        raise _unknown_user(name)
    return User.from_row(row)


async def set_public(conn: AsyncConnection, node: Node, public: bool) -> Node:
    """Provide the node for everyone (or stop). Only a node of an administrator or of the
    installation can be: another owner's agent must not receive everyone's instances."""
    if public and node.owner_id is not None:
        role = (await conn.execute(sa.select(users.c.role).where(users.c.id == node.owner_id))).scalar()
        if role != "admin":
            raise Conflict("only a node an administrator owns (or no one owns) can be provided for everyone",
                           code="owner_not_admin")
    return await update(conn, node.id, public=public)
