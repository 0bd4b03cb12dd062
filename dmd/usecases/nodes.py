"""Nodes: create (with a join token), join, rename, cordon, new join token, rotate the
credential, share, delete; what their agents answer (ping, facts, containers); and the reads
the API and the pages show.

Each change checks who may act, changes the database, records the audit entry and, where it
must, talks to the node's agent through the hub.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from agent import protocol as p
from dmd.auth.tokens import new_secret
from dmd.core import Dm
from dmd.errors import Forbidden
from dmd.models import Actor, Node, User
from dmd.queries import audit
from dmd.queries import nodes as svc
from dmd.queries import users as user_svc

ROTATE_TIMEOUT_S = 15


def join_command(server_url: str, token: str) -> str:
    """The line to run on the new node."""
    return f"dmc join {server_url} {token}"


# --- changes --------------------------------------------------------------------------------

async def create(dm: Dm, actor: Actor, owner: User, name: str) -> tuple[Node, str]:
    """A pending node owned by `owner` and its one-time join token."""
    async with dm.db.begin() as conn:
        node, token = await svc.create(conn, name=name, owner=owner, join_ttl_s=dm.config.join_token_ttl_s)
        await audit.record(conn, actor, "node.create", "node", node.id, name=node.name)
    return node, token


async def join(dm: Dm, actor: Actor, token: str, hostname: str | None) -> tuple[Node, str]:
    """Trade a join token for the node's credential (an agent's first call)."""
    async with dm.db.begin() as conn:
        node, credential = await svc.join(conn, token)
        await audit.record(conn, actor, "node.join", "node", node.id, hostname=(hostname or "")[:255])
    return node, credential


async def rename(dm: Dm, actor: Actor, user: User, node_id: int, name: str) -> Node:
    async with dm.db.begin() as conn:
        before = await svc.get_manageable(conn, user, node_id)
        node = await svc.update(conn, before.id, name=name)
        await audit.record(conn, actor, "node.rename", "node", node.id, before=before.name, after=node.name)
    return node


async def set_cordon(dm: Dm, actor: Actor, user: User, node_id: int, cordoned: bool) -> Node:
    async with dm.db.begin() as conn:
        node = await svc.get_manageable(conn, user, node_id)
        node = await svc.update(conn, node.id, cordoned=cordoned)
        await audit.record(conn, actor, "node.cordon" if cordoned else "node.uncordon", "node", node.id)
    return node


async def new_join_token(dm: Dm, actor: Actor, user: User, node_id: int) -> tuple[Node, str]:
    """A fresh one-time join token (the old one stops working)."""
    async with dm.db.begin() as conn:
        node = await svc.get_manageable(conn, user, node_id)
        node, token = await svc.new_join_token(conn, node.id, dm.config.join_token_ttl_s)
        await audit.record(conn, actor, "node.join_token", "node", node.id)
    return node, token


@dataclass(frozen=True, slots=True)
class Rotated:
    node: Node
    delivered: bool  # the online agent received and saved the new credential
    join_token: str | None = None  # the node was offline: re-join it with this


async def rotate_credential(dm: Dm, actor: Actor, user: User, node_id: int) -> Rotated:
    """Replace the node's credential: handed to its agent when online (which then reconnects
    with it), else the old one stops working and the node re-joins with a new token."""
    db, hub = dm.db, dm.hub
    async with db.read() as conn:
        node = await svc.get_manageable(conn, user, node_id)
    if hub.is_online(node.id):
        credential = new_secret(svc.CREDENTIAL_PREFIX)
        # The agent saves the new credential before it answers; only then does dmd switch.
        await hub.ask(node.id, p.CredentialRotate(credential), timeout=ROTATE_TIMEOUT_S)
        async with db.begin() as conn:
            await svc.set_credential(conn, node.id, credential)
            await audit.record(conn, actor, "node.rotate_credential", "node", node.id, delivered=True)
        await hub.disconnect(node.id, p.CLOSE_NORMAL, "credential rotated: reconnect with the new one")
        return Rotated(node, delivered=True)
    async with db.begin() as conn:
        await svc.set_credential(conn, node.id, None)
        node, token = await svc.new_join_token(conn, node.id, dm.config.join_token_ttl_s)
        await audit.record(conn, actor, "node.rotate_credential", "node", node.id, delivered=False)
    return Rotated(node, delivered=False, join_token=token)


async def delete(dm: Dm, actor: Actor, user: User, node_id: int) -> Node:
    """Delete a node: its agent is told and its link closed; its metrics are forgotten."""
    async with dm.db.begin() as conn:
        node = await svc.get_manageable(conn, user, node_id)
        await svc.delete(conn, node.id)
        await audit.record(conn, actor, "node.delete", "node", node.id, name=node.name)
    await dm.hub.disconnect(node.id, p.CLOSE_DELETED, "the node was deleted", notice=p.message(p.NODE_DELETED))
    dm.hub.forget(node.id)
    return node


async def share(dm: Dm, actor: Actor, user: User, node_id: int, *, username: str | None = None,
                user_id: int | None = None) -> dict[str, Any]:
    """Offer the node to another user (plain users name them by exact username; administrators
    may give an id). The share is pending until its recipient accepts it; the reply carries an
    email only for administrators."""
    async with dm.db.begin() as conn:
        node = await svc.get_manageable(conn, user, node_id)
        target = await svc.find_share_target(conn, user, username, user_id)
        await svc.share(conn, node, target)
        await audit.record(conn, actor, "node.share", "node", node.id, user=target.username)
        return next(s for s in await svc.shares(conn, node.id, with_email=user.is_admin)
                    if s["user_id"] == target.id)


async def unshare(dm: Dm, actor: Actor, user: User, node_id: int, user_id: int) -> Node:
    async with dm.db.begin() as conn:
        node = await svc.get_manageable(conn, user, node_id)
        await svc.unshare(conn, node.id, user_id)
        await audit.record(conn, actor, "node.unshare", "node", node.id, user_id=user_id)
    return node


async def accept_share(dm: Dm, actor: Actor, user: User, node_id: int) -> dict[str, Any]:
    """The recipient accepts a node shared with them: from now on they may place on it, and
    automatic placement may choose it for them."""
    async with dm.db.begin() as conn:
        await svc.accept(conn, user, node_id)
        await audit.record(conn, actor, "node.share_accept", "node", node_id)
        return next(s for s in await svc.shared_with(conn, user) if s["node_id"] == node_id)


async def leave_share(dm: Dm, actor: Actor, user: User, node_id: int) -> None:
    """The recipient declines a pending share or leaves an accepted one, at any time (their
    instances already on the node stay theirs; no new one goes there)."""
    async with dm.db.begin() as conn:
        was_accepted = await svc.leave(conn, user, node_id)
        await audit.record(conn, actor, "node.share_leave" if was_accepted else "node.share_decline", "node",
                           node_id)


async def shared_with(dm: Dm, user: User) -> list[dict[str, Any]]:
    """The nodes offered to `user`: pending (to accept or decline) and accepted (to leave)."""
    async with dm.db.read() as conn:
        return await svc.shared_with(conn, user)


async def set_public(dm: Dm, actor: Actor, user: User, node_id: int, public: bool) -> Node:
    """An administrator provides the node for everyone (every user may place on it, and DM may
    choose it automatically), or stops."""
    if not user.is_admin:
        raise Forbidden("only an administrator can provide a node for everyone")
    async with dm.db.begin() as conn:
        node = await svc.get(conn, node_id)
        node = await svc.set_public(conn, node, public)
        await audit.record(conn, actor, "node.public" if public else "node.private", "node", node.id)
    return node


# --- the agent's answers --------------------------------------------------------------------

async def ping(dm: Dm, user: User, node_id: int) -> tuple[float, float]:
    """A round trip over the node's link: (milliseconds, the agent's clock)."""
    async with dm.db.read() as conn:
        node = await svc.get_visible(conn, user, node_id)
    started = time.monotonic()
    reply = await dm.hub.ask(node.id, p.Ping())
    return round((time.monotonic() - started) * 1000, 2), reply.at


async def refresh_facts(dm: Dm, user: User, node_id: int) -> Node:
    """Have the agent collect its facts again now; the node as it is afterwards."""
    async with dm.db.read() as conn:
        node = await svc.get_manageable(conn, user, node_id)
    facts = await dm.hub.ask(node.id, p.FactsRefresh())
    async with dm.db.begin() as conn:
        await svc.store_facts(conn, node.id, p.to_data(facts))
        return await svc.get(conn, node.id)


async def containers(dm: Dm, user: User, node_id: int) -> list[p.ContainerInfo]:
    """Every container on the node, as its agent lists them."""
    async with dm.db.read() as conn:
        node = await svc.get_manageable(conn, user, node_id)
    reply = await dm.hub.ask(node.id, p.ContainersList(), timeout=30)
    return reply.containers


async def metrics(dm: Dm, user: User, node_id: int) -> list[dict[str, Any]]:
    """The live metrics the agent pushed lately (kept in memory, briefly)."""
    async with dm.db.read() as conn:
        node = await svc.get_visible(conn, user, node_id)
    return dm.hub.recent_metrics(node.id)


# --- reads ------------------------------------------------------------------------------------

async def list_visible(dm: Dm, user: User, *, limit: int, after_id: int | None) -> list[Node]:
    async with dm.db.read() as conn:
        return await svc.list_visible(conn, user, limit=limit, after_id=after_id)


async def get_visible(dm: Dm, user: User, node_id: int) -> Node:
    """The node if `user` may see it; otherwise 404."""
    async with dm.db.read() as conn:
        return await svc.get_visible(conn, user, node_id)


async def get_manageable(dm: Dm, user: User, node_id: int) -> Node:
    """The node if `user` may change it (else 404, or 403 when it is only shared with them)."""
    async with dm.db.read() as conn:
        return await svc.get_manageable(conn, user, node_id)


async def get(dm: Dm, node_id: int) -> Node:
    async with dm.db.read() as conn:
        return await svc.get(conn, node_id)


async def by_ids(dm: Dm, node_ids: set[int]) -> dict[int, Node]:
    """The nodes with these ids (NotFound when one is gone)."""
    async with dm.db.read() as conn:
        return {node_id: await svc.get(conn, node_id) for node_id in node_ids}


async def shares(dm: Dm, user: User, node_id: int) -> list[dict[str, Any]]:
    """The users a node is shared with (its owner and administrators may ask; emails only for
    administrators)."""
    async with dm.db.read() as conn:
        node = await svc.get_manageable(conn, user, node_id)
        return await svc.shares(conn, node.id, with_email=user.is_admin)


async def usernames(dm: Dm, user_ids: set[int]) -> dict[int, str]:
    """id -> username of the users that still exist."""
    names: dict[int, str] = {}
    async with dm.db.read() as conn:
        for uid in user_ids:
            u = await user_svc.find(conn, uid)
            if u is not None:
                names[uid] = u.username
    return names


@dataclass(frozen=True, slots=True)
class Detail:
    owner: str | None
    shares: list[dict[str, Any]]  # only for those who may manage the node


async def detail(dm: Dm, node: Node, manage: bool, *, with_email: bool = False) -> Detail:
    """The node page's owner name and (for its managers) shares."""
    shares: list[dict[str, Any]] = []
    owner = None
    async with dm.db.read() as conn:
        if manage:
            shares = await svc.shares(conn, node.id, with_email=with_email)
        if node.owner_id is not None:
            o = await user_svc.find(conn, node.owner_id)
            owner = o.username if o else None
    return Detail(owner, shares)
