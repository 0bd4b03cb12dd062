"""``dmc``: the DM node agent's command line.

    dmc join <server-url> <token> [--config PATH]   trade a join token for the node credential
    dmc run [--config PATH]                         keep the link to dmd up (systemd runs this)
    dmc facts [--config PATH]                       print this host's facts as JSON
    dmc --version

Exit status: 0 success; 1 the join was refused or dmd could not be reached; 2 bad usage or
an invalid config file (one line on stderr naming the problem).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import logging
import os
import shlex
import signal
import socket
import sys
from typing import Any

from agent import __version__, protocol
from agent.config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_DOCKER_HOST,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_METRICS_INTERVAL_S,
    DEFAULT_PORT_FORWARDING,
    AgentConfig,
    ConfigError,
    check_writable,
    default_port_pools,
    join_url,
    load_config,
    normalize_server_url,
    save_config,
)

__all__ = ["main"]

log = logging.getLogger("agent.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
JOIN_TIMEOUT_S = 30.0


def _err(text: str) -> None:
    print(f"dmc: {text}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dmc",
        description="DM node agent: connects this machine to a DM control plane (dmd).",
        epilog="Exit status: 0 ok, 1 join refused or dmd unreachable, 2 bad usage or invalid config.",
    )
    p.add_argument("--version", action="version", version=f"dmc {__version__} (protocol {protocol.PROTOCOL_VERSION})")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    j = sub.add_parser("join", help="join a DM control plane with a one-time token")
    j.add_argument("server", help="dmd's URL, http(s)://host[:port][/prefix]")
    j.add_argument("token", help="the join token shown on dmd's node page")
    j.add_argument("--config", metavar="PATH", default=DEFAULT_CONFIG_PATH,
                   help=f"where to write the agent config (default {DEFAULT_CONFIG_PATH})")
    j.add_argument("--hostname", help="the name to offer dmd for this node (default: this host's name)")

    r = sub.add_parser("run", help="run the agent: keep the link to dmd up")
    r.add_argument("--config", metavar="PATH", default=DEFAULT_CONFIG_PATH,
                   help=f"agent config file (default {DEFAULT_CONFIG_PATH})")
    r.add_argument("--log-level", dest="log_level", default="info", choices=["debug", "info", "warning", "error"])

    f = sub.add_parser("facts", help="print this host's facts as JSON and exit")
    f.add_argument("--config", metavar="PATH",
                   help=f"take docker_host and public_address from this config (default {DEFAULT_CONFIG_PATH} "
                        "when readable)")
    f.add_argument("--docker-host", dest="docker_host", metavar="URL",
                   help=f"Docker Engine address (default {DEFAULT_DOCKER_HOST})")
    return p


def setup_logging(level: str) -> None:
    # Under systemd the journal stamps each line itself.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt, stream=sys.stderr)


# --------------------------------------------------------------------------- join


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip()
    return text or type(exc).__name__


def _error_message(body: Any, status: int) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        if isinstance(message, str) and message.strip():
            return message.strip()
    return f"dmd answered HTTP {status}"


async def _post_join(server: str, token: str, hostname: str) -> tuple[int, Any]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=JOIN_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": f"dmc/{__version__}"}) as session,
        session.post(join_url(server), json={"token": token, "hostname": hostname}) as resp,
    ):
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = None
        return resp.status, body


def _existing(path: str) -> AgentConfig | None:
    try:
        return load_config(path)
    except ConfigError:
        return None


async def join(server: str, token: str, config_path: str, hostname: str | None = None) -> int:
    import aiohttp

    try:
        server = normalize_server_url(server)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    token = token.strip()
    if not token:
        _err("the join token is empty")
        return EXIT_USAGE
    # Check the config can be written before the one-time token is spent.
    try:
        await asyncio.to_thread(check_writable, config_path)
    except OSError as exc:
        _err(f"cannot write the config file {config_path}: {exc.strerror or exc} "
             "(run as root, or choose another file with --config)")
        return EXIT_FAILED
    try:
        status, body = await _post_join(server, token, hostname or socket.gethostname())
    except aiohttp.ClientSSLError as exc:
        _err(f"cannot reach dmd at {server}: TLS failed: {_describe(exc)}")
        return EXIT_FAILED
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        _err(f"cannot reach dmd at {server}: {_describe(exc)}")
        return EXIT_FAILED
    if not 200 <= status < 300:
        _err(f"join refused: {_error_message(body, status)}")
        return EXIT_FAILED
    if not isinstance(body, dict):
        _err(f"unexpected answer from {server}: not a JSON object (is this dmd?)")
        return EXIT_FAILED
    node_id, name, credential = body.get("node_id"), body.get("name"), body.get("credential")
    heartbeat_s = body.get("heartbeat_s", DEFAULT_HEARTBEAT_S)
    old = _existing(config_path)
    try:
        if not isinstance(credential, str):
            raise ConfigError("credential is missing", "credential")
        config = AgentConfig(
            server=server,
            node_id=node_id if isinstance(node_id, int) else -1,
            credential=credential,
            heartbeat_s=heartbeat_s,
            metrics_interval_s=old.metrics_interval_s if old else DEFAULT_METRICS_INTERVAL_S,
            docker_host=old.docker_host if old else DEFAULT_DOCKER_HOST,
            public_address=old.public_address if old else None,
            port_pools=dict(old.port_pools) if old else default_port_pools(),
            port_forwarding=old.port_forwarding if old else DEFAULT_PORT_FORWARDING,
            extra=dict(old.extra) if old else {},
            path=config_path,
        )
    except ConfigError as exc:
        _err(f"unexpected answer from {server}: {exc}")
        return EXIT_FAILED
    try:
        await asyncio.to_thread(save_config, config)
    except OSError as exc:
        _err(f"joined as node {node_id}, but writing {config_path} failed: {exc.strerror or exc}")
        return EXIT_FAILED
    label = f"{name!r} (id {node_id})" if isinstance(name, str) and name else f"id {node_id}"
    print(f"dmc: joined {server} as node {label}; config written to {config_path}")
    print(f"dmc: start the agent with {_start_hint(config_path)}")
    return EXIT_OK


def _start_hint(config_path: str) -> str:
    """How to start the agent on the config just written: systemd's unit reads the default file
    only, so another file is started with `dmc run --config` naming it."""
    if config_path == DEFAULT_CONFIG_PATH:
        return "`systemctl enable --now dmc` (or `dmc run`)"
    return f"`dmc run --config {shlex.quote(config_path)}`"


# --------------------------------------------------------------------------- run


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc's malloc_trim).

    Start-up (imports, the first facts, the handshake) leaves freed memory in the heap;
    the agent idles for days, so giving it back keeps its resident size down."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None)
            trim = libc.malloc_trim  # glibc only (musl has none)
        except (OSError, AttributeError):
            return
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
        trim(0)


async def _trim_memory_periodically(first_s: float = 15.0, every_s: float = 600.0) -> None:
    await asyncio.sleep(first_s)
    while True:
        release_memory()
        await asyncio.sleep(every_s)


async def run_agent(config: AgentConfig) -> int:
    """Run the link until SIGTERM/SIGINT (clean close, 0) or node deletion (0)."""
    from agent.workloads import make_link, run_link

    link, workloads = make_link(config)
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()
    trimmer = loop.create_task(_trim_memory_periodically())
    pending.add(trimmer)

    def on_signal(name: str) -> None:
        log.info("%s received; closing the link", name)
        task = loop.create_task(link.stop())
        pending.add(task)
        task.add_done_callback(pending.discard)

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        return await run_link(link, workloads)
    finally:
        trimmer.cancel()
        for sig in signals:
            loop.remove_signal_handler(sig)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if config.credential is None:
        _err(f"{args.config} holds no credential (dmd deleted this node); join again with "
             "`dmc join <server-url> <token>`")
        return EXIT_USAGE
    setup_logging(args.log_level)
    log.info("dmc %s starting (node %d, dmd %s)", __version__, config.node_id, config.server)
    return asyncio.run(run_agent(config))


# --------------------------------------------------------------------------- facts


def _facts(args: argparse.Namespace) -> int:
    from agent.docker_info import node_facts
    from agent.runtime.docker import CAPABILITIES

    docker_host, public_address = DEFAULT_DOCKER_HOST, None
    if args.config or os.access(DEFAULT_CONFIG_PATH, os.R_OK):
        try:
            config = load_config(args.config or DEFAULT_CONFIG_PATH)
        except ConfigError as exc:
            if args.config:
                _err(str(exc))
                return EXIT_USAGE
            _err(f"{exc}; using the defaults")  # the implicit default config: facts still work
        else:
            docker_host, public_address = config.docker_host, config.public_address
    if args.docker_host:
        docker_host = args.docker_host
    facts = asyncio.run(node_facts(docker_host, public_address=public_address))
    facts["capabilities"] = CAPABILITIES.to_dict()  # as `dmc run` reports them (it drives Docker)
    print(json.dumps(facts, indent=2, sort_keys=True))
    return EXIT_OK


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "join":
            return asyncio.run(join(args.server, args.token, args.config, args.hostname))
        if args.command == "run":
            return _run(args)
        if args.command == "facts":
            return _facts(args)
    except KeyboardInterrupt:
        return 130
    parser.print_help(sys.stderr)
    return EXIT_USAGE
