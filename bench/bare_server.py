"""The baseline for `make bench`: one bare aiohttp handler that returns a fixed JSON body.

Run by bench/run.py as `python bench/bare_server.py --port N --body-file PATH`. It serves
GET /api/v1/me with exactly the bytes dmd returned for that route, with the same
content type, no middleware and no access log (dmd runs without one too).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiohttp import web


def make_app(body: str) -> web.Application:
    async def me(_: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/me", me)
    return app


async def serve(host: str, port: int, body: str) -> None:
    runner = web.AppRunner(make_app(body), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description="bare aiohttp baseline for make bench")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--body-file", required=True, help="file holding the exact JSON body to return")
    args = p.parse_args()
    body = Path(args.body_file).read_text(encoding="utf-8")
    asyncio.run(serve(args.host, args.port, body))


if __name__ == "__main__":
    main()
