"""Changes to nodes that take several steps, shared by the JSON API and the pages.

Like dmd.services.accounts these open their own transactions: each checks who may act,
changes the database, records the audit entry and, where it must, talks to the node's
agent through the hub, so that the API and the pages cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent import protocol as p
from dmd.agents.hub import Hub
from dmd.auth.tokens import new_secret
from dmd.db import Database
from dmd.models import Node, User
from dmd.services import audit
from dmd.services import nodes as svc
from dmd.services.audit import Actor

ROTATE_TIMEOUT_S = 15


def join_command(server_url: str, token: str) -> str:
    """The line to run on the new node."""
    return f"dmc join {server_url} {token}"


async def create(db: Database, actor: Actor, owner: User, name: str, join_ttl_s: int) -> tuple[Node, str]:
    """A pending node owned by `owner` and its one-time join token."""
    async with db.begin() as conn:
        node, token = await svc.create(conn, name=name, owner=owner, join_ttl_s=join_ttl_s)
        await audit.record(conn, actor, "node.create", "node", node.id, name=node.name)
    return node, token


async def rename(db: Database, actor: Actor, user: User, node_id: int, name: str) -> Node:
    async with db.begin() as conn:
        before = await svc.get_manageable(conn, user, node_id)
        node = await svc.update(conn, before.id, name=name)
        await audit.record(conn, actor, "node.rename", "node", node.id, before=before.name, after=node.name)
    return node


async def set_cordon(db: Database, actor: Actor, user: User, node_id: int, cordoned: bool) -> Node:
    async with db.begin() as conn:
        node = await svc.get_manageable(conn, user, node_id)
        node = await svc.update(conn, node.id, cordoned=cordoned)
        await audit.record(conn, actor, "node.cordon" if cordoned else "node.uncordon", "node", node.id)
    return node


async def new_join_token(
    db: Database, actor: Actor, user: User, node_id: int, join_ttl_s: int
) -> tuple[Node, str]:
    """A fresh one-time join token (the old one stops working)."""
    async with db.begin() as conn:
        node = await svc.get_manageable(conn, user, node_id)
        node, token = await svc.new_join_token(conn, node.id, join_ttl_s)
        await audit.record(conn, actor, "node.join_token", "node", node.id)
    return node, token


@dataclass(frozen=True, slots=True)
class Rotated:
    node: Node
    delivered: bool  # the online agent received and saved the new credential
    join_token: str | None = None  # the node was offline: re-join it with this


async def rotate_credential(
    db: Database, hub: Hub, actor: Actor, user: User, node_id: int, join_ttl_s: int
) -> Rotated:
    """Replace the node's credential: handed to its agent when online (which then reconnects
    with it), else the old one stops working and the node re-joins with a new token."""
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
        node, token = await svc.new_join_token(conn, node.id, join_ttl_s)
        await audit.record(conn, actor, "node.rotate_credential", "node", node.id, delivered=False)
    return Rotated(node, delivered=False, join_token=token)


async def delete(db: Database, hub: Hub, actor: Actor, user: User, node_id: int) -> Node:
    """Delete a node: its agent is told and its link closed; its metrics are forgotten."""
    async with db.begin() as conn:
        node = await svc.get_manageable(conn, user, node_id)
        await svc.delete(conn, node.id)
        await audit.record(conn, actor, "node.delete", "node", node.id, name=node.name)
    await hub.disconnect(node.id, p.CLOSE_DELETED, "the node was deleted", notice=p.message(p.NODE_DELETED))
    hub.forget(node.id)
    return node


async def share(
    db: Database, actor: Actor, user: User, node_id: int, *, username: str | None = None,
    user_id: int | None = None,
) -> dict[str, Any]:
    """Share the node with another user (by username or id); returns the new share."""
    async with db.begin() as conn:
        node = await svc.get_manageable(conn, user, node_id)
        target = await svc.find_user(conn, username, user_id)
        await svc.share(conn, node, target)
        await audit.record(conn, actor, "node.share", "node", node.id, user=target.username)
        return next(s for s in await svc.shares(conn, node.id) if s["user_id"] == target.id)


async def unshare(db: Database, actor: Actor, user: User, node_id: int, user_id: int) -> Node:
    async with db.begin() as conn:
        node = await svc.get_manageable(conn, user, node_id)
        await svc.unshare(conn, node.id, user_id)
        await audit.record(conn, actor, "node.unshare", "node", node.id, user_id=user_id)
    return node
