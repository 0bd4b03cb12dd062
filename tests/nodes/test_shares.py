"""Shares are offers the recipient accepts (and may leave); plain users share by exact username
only, learning nothing about who exists; emails stay with administrators; nodes an admin
provides for everyone; plain users create nodes only when an admin allows it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from dmd.core import DM
from dmd.db.schema import node_shares
from tests.conftest import add_user, make_token


async def _json(r: Any) -> Any:
    return await r.json()


async def _user_id(client, headers) -> int:
    return int((await (await client.get("/api/v1/me", headers=headers)).json())["id"])


async def test_a_share_is_pending_until_the_recipient_accepts_and_can_be_left(client, admin, alice, joined):
    await add_user(client, "bob@example.org", username="bob")
    bob = await make_token(client, "bob@example.org")
    nid, _ = await joined("alice-node", alice)

    r = await client.post(f"/api/v1/nodes/{nid}/shares", json={"username": "bob"}, headers=alice)
    assert r.status == 201, await r.text()
    share = await r.json()
    assert (share["username"], share["state"], share["accepted_at"], share["email"]) == ("bob", "pending", None, None)

    # Pending: bob neither sees the node nor may place on it, by name or automatically.
    assert (await client.get(f"/api/v1/nodes/{nid}", headers=bob)).status == 404
    assert (await (await client.get("/api/v1/nodes", headers=bob)).json())["items"] == []
    assert await (await client.get("/api/v1/capacity", headers=bob)).json() == []
    r = await client.post("/api/v1/instances", json={"name": "x", "image": "img:1", "node_id": nid}, headers=bob)
    assert r.status == 422 and (await r.json())["error"]["field"] == "node_id"
    mine = await (await client.get("/api/v1/shares", headers=bob)).json()
    assert [(s["node_id"], s["node_name"], s["owner"], s["state"]) for s in mine] == [
        (nid, "alice-node", "alice", "pending")]

    # Nobody else can accept it for bob; accepting what is not offered is a 404 with a code.
    r = await client.post(f"/api/v1/shares/{nid}/accept", headers=alice)
    assert (r.status, (await r.json())["error"]["code"]) == (404, "no_share")
    r = await client.post("/api/v1/shares/999999/accept", headers=bob)
    assert (r.status, (await r.json())["error"]["code"]) == (404, "no_share")

    r = await client.post(f"/api/v1/shares/{nid}/accept", headers=bob)
    assert r.status == 200 and (await r.json())["state"] == "accepted"
    assert (await client.post(f"/api/v1/shares/{nid}/accept", headers=bob)).status == 200  # twice: no change
    got = await (await client.get(f"/api/v1/nodes/{nid}", headers=bob)).json()
    assert got["access"] == "shared"
    assert [c["node_id"] for c in await (await client.get("/api/v1/capacity", headers=bob)).json()] == [nid]
    listed = await (await client.get(f"/api/v1/nodes/{nid}/shares", headers=alice)).json()
    assert [(s["username"], s["state"], s["email"]) for s in listed] == [("bob", "accepted", None)]

    # bob leaves, whenever he likes: the node is gone from his view, and the share from alice's list.
    assert (await client.delete(f"/api/v1/shares/{nid}", headers=bob)).status == 204
    assert (await client.get(f"/api/v1/nodes/{nid}", headers=bob)).status == 404
    assert await (await client.get(f"/api/v1/nodes/{nid}/shares", headers=alice)).json() == []
    r = await client.delete(f"/api/v1/shares/{nid}", headers=bob)
    assert (r.status, (await r.json())["error"]["code"]) == (404, "no_share")

    # Declining a pending offer is the same call.
    await client.post(f"/api/v1/nodes/{nid}/shares", json={"username": "bob"}, headers=alice)
    assert (await client.delete(f"/api/v1/shares/{nid}", headers=bob)).status == 204
    assert await (await client.get("/api/v1/shares", headers=bob)).json() == []
    audit = await (await client.get("/api/v1/audit?action=node.&limit=200", headers=admin)).json()
    assert {"node.share", "node.share_accept", "node.share_leave", "node.share_decline"} <= {
        e["action"] for e in audit["items"]}


async def test_plain_users_share_by_exact_username_and_learn_nothing_about_who_exists(client, admin, alice, joined):
    await add_user(client, "bob@example.org", username="bob")
    dave = await add_user(client, "dave@example.org", username="dave")
    r = await client.patch(f"/api/v1/users/{dave}", json={"disabled": True}, headers=admin)
    assert r.status == 200
    nid, _ = await joined("alice-node", alice)
    bob_id = await _user_id(client, await make_token(client, "bob@example.org"))

    # By id: refused for plain users, whether the id exists or not.
    for uid in (bob_id, dave, 424242):
        r = await client.post(f"/api/v1/nodes/{nid}/shares", json={"user_id": uid}, headers=alice)
        body = await r.json()
        assert (r.status, body["error"]["code"], body["error"]["field"]) == (422, "username_required", "user_id")

    # A disabled account answers exactly like one that does not exist.
    async def refusal(name: str) -> tuple[int, dict[str, Any]]:
        r = await client.post(f"/api/v1/nodes/{nid}/shares", json={"username": name}, headers=alice)
        return r.status, await r.json()

    ghost = await refusal("ghost")
    disabled = await refusal("dave")
    assert ghost[0] == disabled[0] == 422
    assert ghost[1]["error"]["code"] == "unknown_user" and ghost[1]["error"]["field"] == "username"
    assert disabled[1] == {"error": {**ghost[1]["error"], "message": ghost[1]["error"]["message"].replace(
        "'ghost'", "'dave'")}}
    # Exact names only: no prefix, no case-folding into someone else.
    assert (await refusal("bo"))[1]["error"]["code"] == "unknown_user"

    # The share reply and list show no email to the owner; administrators see it, and may use ids.
    r = await client.post(f"/api/v1/nodes/{nid}/shares", json={"username": "bob"}, headers=alice)
    assert (await r.json())["email"] is None
    await add_user(client, "carol@example.org", username="carol")
    carol_id = await _user_id(client, await make_token(client, "carol@example.org"))
    r = await client.post(f"/api/v1/nodes/{nid}/shares", json={"user_id": carol_id}, headers=admin)
    assert r.status == 201 and (await r.json())["email"] == "carol@example.org"
    r = await client.post(f"/api/v1/nodes/{nid}/shares", json={"user_id": dave}, headers=admin)
    assert (r.status, (await r.json())["error"]["code"]) == (422, "unknown_user")
    as_owner = await (await client.get(f"/api/v1/nodes/{nid}/shares", headers=alice)).json()
    assert [s["email"] for s in as_owner] == [None, None]
    as_admin = await (await client.get(f"/api/v1/nodes/{nid}/shares", headers=admin)).json()
    assert [s["email"] for s in as_admin] == ["bob@example.org", "carol@example.org"]


async def test_plain_users_create_nodes_only_when_an_admin_allows(client, admin):
    r = await client.post("/api/v1/users", json={"email": "new@example.org", "password": "long enough pw"},
                          headers=admin)
    assert r.status == 201, await r.text()
    created = await r.json()
    assert (created["node_limit"], created["port_map_limit"], created["log_follow_limit"],
            created["transfer_limit"]) == (0, 20, 4, 2)
    new = await make_token(client, "new@example.org", "long enough pw")
    r = await client.post("/api/v1/nodes", json={"name": "mine"}, headers=new)
    body = await r.json()
    assert (r.status, body["error"]["code"]) == (403, "quota_exceeded")
    assert "an administrator must allow it" in body["error"]["message"]
    r = await client.patch(f"/api/v1/users/{created['id']}", json={
        "node_limit": 1, "port_map_limit": 5, "log_follow_limit": None, "transfer_limit": 1}, headers=admin)
    got = await r.json()
    assert (got["node_limit"], got["port_map_limit"], got["log_follow_limit"], got["transfer_limit"]) == (1, 5, None, 1)
    assert (await client.post("/api/v1/nodes", json={"name": "mine"}, headers=new)).status == 201

    # Given explicitly, the limits are what the admin said (null: no limit); admins own nodes freely.
    r = await client.post("/api/v1/users", json={"email": "free@example.org", "password": "long enough pw",
                                                 "node_limit": None, "port_map_limit": 3}, headers=admin)
    assert ((await r.json())["node_limit"], (await r.json())["port_map_limit"]) == (None, 3)
    r = await client.post("/api/v1/users", json={"email": "boss@example.org", "password": "long enough pw",
                                                 "role": "admin"}, headers=admin)
    assert (await r.json())["node_limit"] is None


async def test_nodes_provided_for_everyone(client, admin, alice, joined):
    await add_user(client, "bob@example.org", username="bob")
    bob = await make_token(client, "bob@example.org")
    site, _ = await joined("site")  # the admin's
    theirs, _ = await joined("alice-node", alice)
    assert (await client.get(f"/api/v1/nodes/{site}", headers=bob)).status == 404

    r = await client.post(f"/api/v1/nodes/{site}/public", json={"public": True}, headers=bob)
    assert (r.status, (await r.json())["error"]["code"]) == (403, "forbidden")
    r = await client.post(f"/api/v1/nodes/{site}/public", json={"public": True}, headers=admin)
    assert r.status == 200 and (await r.json())["public"] is True
    got = await (await client.get(f"/api/v1/nodes/{site}", headers=bob)).json()
    assert (got["access"], got["public"]) == ("public", True)
    assert [c["node_id"] for c in await (await client.get("/api/v1/capacity", headers=bob)).json()] == [site]

    # A plain user's node is never provided for everyone: their agent would get everyone's instances.
    r = await client.post(f"/api/v1/nodes/{theirs}/public", json={"public": True}, headers=admin)
    assert (r.status, (await r.json())["error"]["code"]) == (409, "owner_not_admin")
    # Nor does the flag count once its owner is no longer an admin.
    db = client.app[DM].db
    async with db.begin() as conn:
        from dmd.db.schema import nodes

        await conn.execute(nodes.update().where(nodes.c.id == theirs).values(public=True))
    assert (await client.get(f"/api/v1/nodes/{theirs}", headers=bob)).status == 404

    r = await client.post(f"/api/v1/nodes/{site}/public", json={"public": False}, headers=admin)
    assert (await r.json())["public"] is False
    assert (await client.get(f"/api/v1/nodes/{site}", headers=bob)).status == 404


async def test_a_share_counts_only_for_its_recipient_and_node(client, admin, alice, joined):
    """The acceptance is stored per (node, user): accepting one share leaves the others pending."""
    await add_user(client, "bob@example.org", username="bob")
    await add_user(client, "carol@example.org", username="carol")
    bob = await make_token(client, "bob@example.org")
    carol = await make_token(client, "carol@example.org")
    one, _ = await joined("one", alice)
    two, _ = await joined("two", alice)
    for nid in (one, two):
        for name in ("bob", "carol"):
            r = await client.post(f"/api/v1/nodes/{nid}/shares", json={"username": name}, headers=alice)
            assert r.status == 201
    assert (await client.post(f"/api/v1/shares/{one}/accept", headers=bob)).status == 200
    assert [n["id"] for n in (await (await client.get("/api/v1/nodes", headers=bob)).json())["items"]] == [one]
    assert (await (await client.get("/api/v1/nodes", headers=carol)).json())["items"] == []
    async with client.app[DM].db.read() as conn:
        accepted = (await conn.execute(sa.select(sa.func.count()).select_from(node_shares)
                                       .where(node_shares.c.accepted_at.is_not(None)))).scalar_one()
    assert accepted == 1


async def test_the_attack_a_users_node_shared_with_a_victim_never_gets_their_instance(client, admin, joined, agents):
    """mallory, allowed one node, runs its agent and offers it to the victim; the victim's instance,
    placed by DM, never goes there (its environment would be mallory's to read)."""
    r = await client.post("/api/v1/users", json={"email": "mallory@example.org", "password": "long enough pw"},
                          headers=admin)
    mallory_id = (await r.json())["id"]
    await client.patch(f"/api/v1/users/{mallory_id}", json={"node_limit": 1}, headers=admin)
    mallory = await make_token(client, "mallory@example.org", "long enough pw")
    await add_user(client, "victim@example.org", username="victim")
    victim = await make_token(client, "victim@example.org")

    nid, credential = await joined("trap", mallory)
    agent = agents(nid, credential)
    await agent.connect({"hostname": "trap", "cpu_count": 64, "memory_total_mb": 640000, "gpus": []})
    r = await client.post(f"/api/v1/nodes/{nid}/shares", json={"username": "victim"}, headers=mallory)
    assert r.status == 201
    # The image the victim asks for is in DM's catalogue on mallory's node, for everyone.
    from dmd.db.schema import images
    from dmd.db.types import utcnow

    async with client.app[DM].db.begin() as conn:
        await conn.execute(images.insert().values(node_id=nid, ref="img:1", image_id="sha256:1", size=1, owner_id=None,
                                                  public=True, created_at=utcnow(), updated_at=utcnow()))

    r = await client.post("/api/v1/instances", json={"name": "job", "image": "img:1", "env": {"TOKEN": "s3cr3t"}},
                          headers=victim)
    body = await r.json()
    assert (r.status, body["error"]["code"]) == (409, "no_capacity"), body
    assert (await (await client.get("/api/v1/instances", headers=admin)).json())["items"] == []
    assert not [e for e in agent.received if e.type == "instance.ensure"], [e.type for e in agent.received]
