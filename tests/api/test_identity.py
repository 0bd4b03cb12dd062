"""Who the caller is: bearer tokens (cached, last use recorded now and then), sessions (ended
for good when the user changed), the agent's own paths, and each refusal's words."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from dmd.auth.tokens import hash_secret
from dmd.core import DM
from dmd.db.schema import api_tokens
from tests.conftest import add_user, login, make_token


async def _error(r) -> tuple[int, str]:
    return r.status, (await r.json())["error"]["message"]


async def test_each_malformed_authorization_is_refused_in_its_own_words(client):
    header = "the Authorization header must be 'Bearer <token>'"
    for value, words in (("Basic YWRtaW46YWRtaW4=", header), ("Bearer", header), ("Bearer   ", header),
                         ("Token dm_" + "x" * 30, header), ("Bearer not-a-token", "invalid API token"),
                         ("Bearer dm_short", "invalid API token"),
                         ("Bearer dm_" + "x" * 40, "invalid, expired or revoked API token")):
        got = await _error(await client.get("/api/v1/me", headers={"Authorization": value}))
        assert got == (401, words), value


async def test_a_token_is_cached_and_its_use_recorded_now_and_then(client):
    await add_user(client, "u@example.org")
    headers = await make_token(client, "u@example.org")
    secret = headers["Authorization"].split()[1]
    cache = client.app[DM].token_cache
    assert cache.get(hash_secret(secret)) is None
    before = dt.datetime.now(dt.UTC)
    assert (await client.get("/api/v1/me", headers=headers)).status == 200
    cached = cache.get(hash_secret(secret))
    assert cached is not None and cached[0].email == "u@example.org"

    async def last_used():
        async with client.app[DM].db.read() as conn:
            return (await conn.execute(sa.select(api_tokens.c.last_used_at)
                                       .where(api_tokens.c.id == cached[1]))).scalar_one()

    first = await last_used()
    assert first is not None and before - dt.timedelta(seconds=1) <= first <= dt.datetime.now(dt.UTC)
    # Used again soon after, past the cache: not written again.
    cache.forget_token(cached[1])
    assert (await client.get("/api/v1/me", headers=headers)).status == 200
    assert await last_used() == first
    # Last written long ago: written again.
    async with client.app[DM].db.begin() as conn:
        await conn.execute(api_tokens.update().where(api_tokens.c.id == cached[1])
                           .values(last_used_at=first - dt.timedelta(hours=1)))
    cache.forget_token(cached[1])
    assert (await client.get("/api/v1/me", headers=headers)).status == 200
    assert await last_used() >= first


async def test_a_session_of_a_changed_user_is_ended_for_good(client):
    uid = await add_user(client, "u@example.org")
    await login(client, "u@example.org")
    from dmd.queries import users

    async with client.app[DM].db.begin() as conn:
        await users.set_password(conn, uid, "changed elsewhere")
    r = await client.get("/api/v1/me")
    assert r.status == 401
    # The cookie is cleared, not left to be sent again.
    cleared = [h for h in r.headers.getall("Set-Cookie", []) if h.startswith("dm_session=")]
    assert cleared and ('dm_session=""' in cleared[0] or "dm_session=;" in cleared[0]), cleared


async def test_the_agent_paths_answer_for_themselves(client):
    """The agent's WebSocket and blob paths authenticate with a node credential, not through the
    API's identity (whose 'invalid API token' a node credential would get)."""
    for path in ("/agent/ws", "/agent/blobs/nothing"):
        r = await client.get(path, headers={"Authorization": "Bearer dmn_" + "x" * 40})
        body = await r.text()
        assert "invalid API token" not in body and r.status != 500, (path, r.status, body)
