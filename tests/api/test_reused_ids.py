"""A deleted user's cookie or token never names the user who gets the row next (issue 10,
hole 2): sessions and tokens carry the user's never-reused session key, not only an id."""

from __future__ import annotations

import sqlalchemy as sa

from dmd.core import DM
from dmd.db.schema import users as users_t
from tests.conftest import add_user, login, make_token


async def test_a_deleted_users_cookie_and_token_do_not_name_the_next_user_of_that_id(client, admin):
    victim_id = await add_user(client, "gone@example.org")
    await login(client, "gone@example.org")  # the cookie stays in the client's jar
    token = await make_token(client, "gone@example.org")
    assert (await client.get("/api/v1/me")).status == 200
    # Deleted by the admin (a bearer call: the token, not the jar's cookie, says who calls),
    # then an admin is made who gets the same id (SQLite used to hand it out again; on every
    # database an id can come back through a restore or a manual insert).
    r = await client.delete(f"/api/v1/users/{victim_id}", headers=admin)
    assert r.status == 204, await r.text()
    heir_id = await add_user(client, "heir@example.org", role="admin")
    async with client.app[DM].db.begin() as conn:
        await conn.execute(users_t.update().where(users_t.c.id == heir_id).values(id=victim_id))
    client.app[DM].token_cache.forget_user(victim_id)

    r = await client.get("/api/v1/me")
    assert r.status == 401, await r.text()
    assert (await r.json())["error"]["code"] == "unauthenticated"
    r = await client.get("/api/v1/me", headers=token)
    assert r.status == 401, await r.text()
    # The heir's own log in works, under that id.
    await login(client, "heir@example.org")
    me = await (await client.get("/api/v1/me")).json()
    assert (me["id"], me["email"]) == (victim_id, "heir@example.org")


async def test_a_token_answers_only_while_its_owners_session_key_is_the_one_it_was_made_with(client):
    uid = await add_user(client, "u@example.org")
    token = await make_token(client, "u@example.org")
    assert (await client.get("/api/v1/me", headers=token)).status == 200
    async with client.app[DM].db.begin() as conn:
        await conn.execute(users_t.update().where(users_t.c.id == uid).values(session_key="0" * 32))
    client.app[DM].token_cache.forget_user(uid)
    assert (await client.get("/api/v1/me", headers=token)).status == 401
    assert (await client.get("/api/v1/me", headers={})).status == 401


async def test_ids_of_deleted_users_and_tokens_are_not_handed_out_again(client, admin):
    first = await add_user(client, "a@example.org")
    last = await add_user(client, "b@example.org")
    token = await make_token(client, "b@example.org")
    r = await client.get("/api/v1/tokens", headers=token)
    token_id = (await r.json())["items"][0]["id"]
    # The highest ids go: SQLite without AUTOINCREMENT would give them out again.
    assert (await client.delete(f"/api/v1/users/{last}", headers=admin)).status == 204
    again = await add_user(client, "c@example.org")
    assert again > last > first
    await make_token(client, "c@example.org")
    async with client.app[DM].db.read() as conn:
        from dmd.db.schema import api_tokens

        newest = (await conn.execute(sa.select(sa.func.max(api_tokens.c.id)))).scalar_one()
    assert newest > token_id
