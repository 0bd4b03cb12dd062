"""The `dmd` command: serve, migrate, user create."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import os
import signal
import sys
from typing import Any

from dmd import __version__, ssh_config
from dmd.config import Config, ConfigError, load
from dmd.errors import StartupError

log = logging.getLogger("dmd")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help="JSON config file (default /etc/dmd/config.json, "
                   "overridden by ~/.config/dmd/config.json)")
    p.add_argument("--data-dir", dest="data_dir", metavar="DIR", help="where dmd keeps its state [DMD_DATA_DIR]")
    p.add_argument("--database", metavar="URL",
                   help="sqlite:///PATH (default), postgresql://USER@HOST/DB or mysql://USER@HOST/DB [DMD_DATABASE]")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dmd", description="DM control-plane daemon")
    p.add_argument("--version", action="version", version=f"dmd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the daemon")
    _common(s)
    s.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 0.0.0.0:3150) [DMD_LISTEN]")
    s.add_argument("--sessions", metavar="URL",
                   help="memory (default), redis://HOST:PORT/DB or memcached://HOST:PORT [DMD_SESSIONS]")
    s.add_argument("--public-url", dest="public_url", metavar="URL",
                   help="how browsers and agents reach dmd, e.g. https://dm.example.org [DMD_PUBLIC_URL]")
    s.add_argument("--ssh-listen", dest="ssh_listen", metavar="HOST:PORT",
                   help="the SSH gateway's address (default 0.0.0.0:2222; off: none) [DMD_SSH_LISTEN]")
    s.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    s.add_argument("--local-node", dest="local_node", action="store_const", const=True, default=None,
                   help="also run a node agent in this process against the local Docker socket [DMD_LOCAL_NODE]")

    m = sub.add_parser("migrate", help="apply database migrations and exit")
    _common(m)

    u = sub.add_parser("user", help="manage users")
    usub = u.add_subparsers(dest="user_command", required=True)
    uc = usub.add_parser("create", help="create a user (an admin with --admin)")
    _common(uc)
    uc.add_argument("--email", required=True)
    uc.add_argument("--username")
    uc.add_argument("--admin", action="store_true")
    uc.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    c = sub.add_parser("ssh-config", help="print a ~/.ssh/config block for your instances through DM's SSH "
                       "gateway (and save the host keys to trust)",
                       description="Run on your own machine: dmd ssh-config --url https://dm.example "
                       "--token dm_... >> ~/.ssh/config; then `ssh NAME` reaches instance NAME.")
    c.add_argument("--url", default=os.environ.get("DM_URL"), help="DM's address, e.g. https://dm.example [DM_URL]")
    c.add_argument("--token", default=None, help="an API token of yours (made on your account page) [DM_TOKEN]; "
                   "prefer the environment: a command line is visible to other users of the machine")
    c.add_argument("--known-hosts", dest="known_hosts", default=ssh_config.KNOWN_HOSTS,
                   help=f"where to save the host keys to trust (default {ssh_config.KNOWN_HOSTS}); - prints them "
                   "to standard error instead")
    return p


def _cli_settings(args: argparse.Namespace) -> dict[str, Any]:
    names = ("listen", "data_dir", "database", "sessions", "public_url", "log_level", "local_node", "ssh_listen")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if level.lower() != "debug":
        logging.getLogger("alembic").setLevel(logging.WARNING)


async def _serve(cfg: Config) -> int:
    from aiohttp import web

    from dmd.app import create_app
    from dmd.core import DM
    from dmd.serverlog import server_options

    app = await create_app(cfg)
    dm = app[DM]
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10, **server_options())
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True)
    await site.start()
    log.info("dmd %s listening on %s:%d (database %s, sessions %s)", __version__, cfg.host, cfg.port,
             dm.db.describe(), cfg.sessions.split("://")[0])
    if cfg.local_node:
        from dmd import local_node

        await dm.local_node.start(local_node.loopback_url(cfg.host, cfg.port))
    link = dm.setup_link
    if link:
        log.warning("no users yet: open this one-time link to create the first admin: %s", link)
        print(f"\n  Set up DM: {link}\n", flush=True)
    # Everything built at start-up lives as long as the process: keep it out of the collector's
    # way, and collect the young generation less often. With thousands of agents a full
    # collection otherwise stalls the loop for hundreds of milliseconds (docs/BENCHMARKS.md).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    log.info("stopped")
    return 0


async def _migrate(cfg: Config) -> int:
    from dmd.db import Database
    from dmd.db.migrate import upgrade

    db = Database(cfg.database)
    try:
        before, after = await upgrade(db)
    finally:
        await db.close()
    print(f"database at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))
    return 0


async def _user_create(cfg: Config, args: argparse.Namespace) -> int:
    from dmd.auth.passwords import MAX_LENGTH, MIN_LENGTH, hash_password
    from dmd.db import Database
    from dmd.db.migrate import upgrade
    from dmd.errors import ApiError
    from dmd.models import Actor
    from dmd.queries import audit, settings, setup, users

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        print("dmd: give --password-stdin to read the password from standard input", file=sys.stderr)
        return 2
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        print(f"dmd: the password must be {MIN_LENGTH} to {MAX_LENGTH} characters", file=sys.stderr)
        return 2
    db = Database(cfg.database)
    try:
        await upgrade(db)
        pw = await hash_password(password)
        async with db.begin() as conn:
            role = "admin" if args.admin else "user"
            user = await users.create(conn, email=args.email, password_hash=pw, role=role,
                                      username=args.username, **users.new_user_limits(role))
            await settings.delete(conn, setup.KEY)  # a user exists: the setup link is void
            await audit.record(conn, Actor(None, None, "cli"), "user.create", "user", user.id,
                               email=user.email, role=user.role)
    except ApiError as e:
        print(f"dmd: {e.message}", file=sys.stderr)
        return 1
    finally:
        await db.close()
    print(f"created {user.role} {user.username} <{user.email}> (id {user.id})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "ssh-config":  # a client of the API: no dmd configuration needed
        return ssh_config.run(args.url, args.token or os.environ.get("DM_TOKEN"), args.known_hosts)
    try:
        cfg = load(args.config, _cli_settings(args))
    except ConfigError as e:
        print(f"dmd: invalid configuration: {e}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level)
    try:
        if args.command == "serve":
            return asyncio.run(_serve(cfg))
        if args.command == "migrate":
            return asyncio.run(_migrate(cfg))
        if args.command == "user" and args.user_command == "create":
            return asyncio.run(_user_create(cfg, args))
    except KeyboardInterrupt:
        return 130
    except (OSError, StartupError) as e:
        print(f"dmd: cannot start: {e}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
