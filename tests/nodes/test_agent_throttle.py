"""Issue 10, hole 6: bad agent credentials count against the address like failed logins; while
it is held back, even a right credential from it is refused (with a reason), and the links of
agents already connected carry on."""

from agent import protocol as p
from dmd.core import DM
from tests.nodes.test_agent_link import _assert_bystander_fine, bystander  # noqa: F401 (fixture)


async def test_bad_agent_credentials_hold_the_address_back(client, admin, joined, agents, bystander):  # noqa: F811
    throttle = client.app[DM].throttle
    room = throttle.free * throttle.address_factor
    for i in range(room):
        a = agents(1, f"dmn_forged-{i}")
        await a.open()
        code, reason = await a.closed()
        assert (code, reason) == (p.CLOSE_AUTH, "unknown or revoked node credential"), i
    nid, cred = await joined("late")
    a = agents(nid, cred)
    await a.open()
    code, reason = await a.closed()
    assert code == p.CLOSE_AUTH and reason.startswith("too many failed authentications; try again in"), reason
    assert throttle.retry_after(["ip:127.0.0.1"]) > 0
    assert throttle.retry_after(["ip:192.0.2.1"]) == 0  # another address is not held back
    await _assert_bystander_fine(client, admin, bystander)
