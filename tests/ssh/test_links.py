"""dmd.gateway_links on its own: how clients name the gateway, and ending a user's connections."""

from __future__ import annotations

from dmd.gateway_links import GatewayAddress, GatewayLinks


class FakeConnection:
    def __init__(self) -> None:
        self.ended: list[str] = []

    def end(self, reason: str) -> None:
        self.ended.append(reason)


def test_the_address_as_ssh_wants_it() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQEbZ7ph/DGNFm8urRF1lcZI5qsN/GYOEf/Vn08IOM/"
    a = GatewayAddress("dm.example", 2222, key, "SHA256:x")
    assert a.jump("alice") == "alice@dm.example:2222"
    assert a.known_host == f"[dm.example]:2222 {key}"
    assert GatewayAddress("dm.example", 22, key, "SHA256:x").known_host == f"dm.example {key}"
    v6 = GatewayAddress("::1", 2222, key, "SHA256:x")
    assert v6.jump("alice") == "alice@[::1]:2222" and v6.known_host.startswith("[::1]:2222 ")


def test_ending_a_users_connections_leaves_the_others() -> None:
    links = GatewayLinks()
    a1, a2, b = FakeConnection(), FakeConnection(), FakeConnection()
    links.add(1, a1)
    links.add(1, a2)
    links.add(2, b)
    assert links.end_for_user(1, "key deleted") == 2
    assert a1.ended == a2.ended == ["key deleted"] and b.ended == []
    assert links.count(1) == 0 and links.count(2) == 1
    assert links.end_for_user(1, "again") == 0
    links.discard(2, b)
    assert links.count(2) == 0
