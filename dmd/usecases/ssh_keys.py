"""SSH keys of users: list, read, add, rename, delete.

A key added goes into the running instances that follow all of their owner's keys; a key
deleted leaves every instance that had it. Either way the nodes of those instances are kicked,
so their authorized keys change within one reconcile round.
"""

from __future__ import annotations

from dmd.core import Dm
from dmd.errors import Forbidden, Invalid
from dmd.models import Actor, SshKey, User
from dmd.queries import audit
from dmd.queries import instance_access as access_q
from dmd.queries import ssh_keys as key_q
from dmd.queries import users as user_q
from dmd.sshkeys import ParsedKey, ParseError, parse_public_key

MAX_KEYS_PER_USER = key_q.MAX_KEYS_PER_USER
NAME_MAX = 100


def parse(text: str | bytes) -> ParsedKey:
    """The key in `text`, or Invalid (422) on field public_key with the parser's reason as code."""
    try:
        return parse_public_key(text)
    except ParseError as e:
        raise Invalid(f"public_key: {e.message}", field="public_key", code=e.code, extra=dict(e.params)) from None


def default_name(key: ParsedKey) -> str:
    return (key.comment or f"{key.label} key")[:NAME_MAX].strip() or f"{key.label} key"


async def list_for(dm: Dm, user: User, owner_id: int | None = None, *, limit: int = MAX_KEYS_PER_USER,
                   after_id: int | None = None) -> list[SshKey]:
    """The user's keys, or (administrators only) another user's."""
    user_id = user.id
    async with dm.db.read() as conn:
        if owner_id is not None and owner_id != user_id:
            if not user.is_admin:
                raise Forbidden("only administrators may list another user's SSH keys")
            user_id = (await user_q.get(conn, owner_id)).id
        return await key_q.list_for(conn, user_id, limit=limit, after_id=after_id)


async def get(dm: Dm, user: User, key_id: int) -> SshKey:
    """One of the user's keys (another user's is NotFound)."""
    async with dm.db.read() as conn:
        return await key_q.get(conn, user.id, key_id)


async def add(dm: Dm, actor: Actor, user: User, name: str | None, text: str | bytes) -> tuple[SshKey, ParsedKey]:
    """Parse and store a key for `user` (nothing is written when it is refused); instances that
    follow all of the user's keys get it."""
    key = parse(text)
    final_name = name.strip() if name and name.strip() else default_name(key)
    async with dm.db.begin() as conn:
        row = await key_q.insert(conn, user.id, final_name, key)
        await audit.record(conn, actor, "ssh_key.create", "ssh_key", row.id, user_id=user.id, name=row.name,
                           type=row.key_type, bits=row.bits, fingerprint=row.fingerprint,
                           options_removed=list(key.options_removed))
    async with dm.db.read() as conn:
        node_ids = await access_q.nodes_following(conn, user.id)
    for node_id in node_ids:
        dm.reconciler.kick(node_id)
    return row, key


async def rename(dm: Dm, actor: Actor, user: User, key_id: int, name: str) -> SshKey:
    async with dm.db.begin() as conn:
        before = await key_q.get(conn, user.id, key_id)
        await key_q.rename(conn, before.id, name)
        after = await key_q.get(conn, user.id, key_id)
        await audit.record(conn, actor, "ssh_key.rename", "ssh_key", after.id, user_id=user.id,
                           before=before.name, after=after.name, fingerprint=after.fingerprint)
    return after


async def delete(dm: Dm, actor: Actor, user: User, key_id: int) -> SshKey:
    """Delete a key; it leaves every instance that had it (read before the delete: the rows
    that listed it go with it)."""
    async with dm.db.read() as conn:
        node_ids = await access_q.nodes_following(conn, user.id, key_id)
    async with dm.db.begin() as conn:
        key = await key_q.get(conn, user.id, key_id)
        await key_q.delete(conn, key.id)
        await audit.record(conn, actor, "ssh_key.delete", "ssh_key", key.id, user_id=user.id, name=key.name,
                           fingerprint=key.fingerprint)
    for node_id in node_ids:
        dm.reconciler.kick(node_id)
    await dm.live.end_for_key(key.id, f"SSH key {key.name} was deleted")
    # Connections to the SSH gateway that logged in before the delete end now (the next login
    # reads the keys afresh).
    dm.gateway.end_for_user(user.id, f"your SSH key {key.fingerprint} was deleted")
    return key
