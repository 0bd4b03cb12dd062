"""The per-user ceiling on log streams followed at once (users.log_follow_limit): beyond it a
follow is refused with 429 too_many_follows; a stream that ends gives its place back."""

from __future__ import annotations

import pytest

from dmd.core import DM
from dmd.follows import FollowCounter, TooManyFollows
from tests.instances.conftest import IMAGE, wait_for, wait_status


async def test_follows_beyond_the_limit_are_refused_until_one_ends(client, admin, local):
    me = await (await client.get("/api/v1/me", headers=admin)).json()
    r = await client.patch(f"/api/v1/users/{me['id']}", json={"log_follow_limit": 2}, headers=admin)
    assert (await r.json())["log_follow_limit"] == 2
    r = await client.post("/api/v1/instances", headers=admin, json={
        "name": "ticker", "image": IMAGE, "command": ["sh", "-c", "while true; do echo tick; sleep 0.5; done"]})
    iid = (await r.json())["id"]
    await wait_status(client, admin, iid, "running")
    url = f"/api/v1/instances/{iid}/logs?tail=1&follow=true"

    held = [await client.get(url, headers=admin) for _ in range(2)]
    assert [h.status for h in held] == [200, 200]
    r = await client.get(url, headers=admin)
    body = await r.json()
    assert (r.status, body["error"]["code"]) == (429, "too_many_follows")
    assert "ask an administrator to raise your log follow limit" in body["error"]["message"]
    # Reading the logs without following is not limited.
    assert (await client.get(f"/api/v1/instances/{iid}/logs?tail=1", headers=admin)).status == 200

    # One stream ends: its place is free again (once the server notices, within a poll).
    held.pop().close()
    follows = client.app[DM].follows
    await wait_for(lambda: follows.held(me["id"]) == 1, "the closed follow given back")
    again = await client.get(url, headers=admin)
    assert again.status == 200
    for h in (*held, again):
        h.close()
    await wait_for(lambda: follows.held(me["id"]) == 0, "every follow given back")


def test_the_counter_gives_back_on_any_exit_and_counts_per_user() -> None:
    c = FollowCounter()
    with c.hold(1, 1):
        with pytest.raises(TooManyFollows) as e, c.hold(1, 1):
            pass
        assert (e.value.status, e.value.code) == (429, "too_many_follows")
        with c.hold(2, 1):  # another user carries on
            assert (c.held(1), c.held(2)) == (1, 1)
    with pytest.raises(RuntimeError), c.hold(1, 1):
        raise RuntimeError("the stream broke")
    assert c.held(1) == 0
    with c.hold(1, None), c.hold(1, None), c.hold(1, None):  # None: no limit
        assert c.held(1) == 3
