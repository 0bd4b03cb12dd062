"""A scriptable agent speaking the real protocol over a real WebSocket, for daemon tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from agent import protocol as p


class FakeAgent:
    def __init__(self, base_url: str, credential: str, node_id: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.credential = credential
        self.node_id = node_id
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.welcome: dict[str, Any] | None = None
        self.answers: dict[str, Any] = {p.PING: {"at": 123.0}}
        self.received: list[p.Envelope] = []
        self.close_reason: str = ""
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> aiohttp.ClientWebSocketResponse:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(
            self.base_url + p.AGENT_WS_PATH, headers={"Authorization": f"Bearer {self.credential}"}
        )
        return self.ws

    async def connect(self, facts: dict[str, Any] | None = None, *, answer: bool = True) -> dict[str, Any]:
        ws = await self.open()
        hello = hello_v1(self.node_id, facts or {"hostname": "fake", "gpus": []})
        await ws.send_str(p.message(p.HELLO, hello).to_json())
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        env = p.decode(msg.data)
        assert env.type == p.WELCOME, env
        self.welcome = env.data
        if answer:
            self._reader = asyncio.create_task(self._read())
        return env.data

    async def _read(self) -> None:
        assert self.ws is not None
        while True:
            msg = await self.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                self.close_reason = str(msg.extra or "")
                break
            env = p.decode(msg.data)
            self.received.append(env)
            if env.id is None or env.type == p.REPLY:
                continue
            ans = self.answers.get(env.type)
            if isinstance(ans, Exception):
                await self.ws.send_str(p.reply_error(env.id, "boom", str(ans)).to_json())
            elif ans == "silent":
                continue
            elif callable(ans):
                await self.ws.send_str(p.reply_ok(env.id, ans(env.data)).to_json())
            elif ans is not None:
                await self.ws.send_str(p.reply_ok(env.id, ans).to_json())
            else:
                await self.ws.send_str(p.reply_error(env.id, "unknown_type", env.type).to_json())

    async def send(self, type_: str, data: dict[str, Any] | None = None, id_: str | None = None) -> None:
        assert self.ws is not None
        await self.ws.send_str(p.message(type_, data or {}, id_).to_json())

    async def send_raw(self, text: str | bytes) -> None:
        assert self.ws is not None
        if isinstance(text, bytes):
            await self.ws.send_bytes(text)
        else:
            await self.ws.send_str(text)

    async def closed(self, timeout: float = 10) -> tuple[int | None, str]:
        """Wait until dmd closes the link; (close code, reason)."""
        assert self.ws is not None
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout)
        else:
            while True:
                msg = await self.ws.receive(timeout=timeout)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    self.close_reason = str(msg.extra or "")
                    break
                self.received.append(p.decode(msg.data))
        return self.ws.close_code, self.close_reason

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()


def hello_v1(node_id: int, facts: dict[str, Any], state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The hello of a protocol-1 agent, as such an agent writes it: its whole state inside."""
    return {"node_id": node_id, "agent_version": "test-agent", "protocol": {"min": 1, "max": 1}, "facts": facts,
            "state": state or {}}


def container(instance_id: int, state: str = "running", **more: Any) -> dict[str, Any]:
    """A managed container as an agent reports it (every field a real agent sends)."""
    return {"id": f"c{instance_id}", "name": f"dm-{instance_id}", "image": "img", "state": state,
            "instance_id": instance_id, "managed": True, **more}


def dumps(obj: Any) -> str:
    return json.dumps(obj)
