"""dmd configuration: defaults < config file(s) < environment < command line.

Every setting has one name used everywhere: the JSON key in the config file, the
`DMD_<NAME>` environment variable and the `--<name>` command-line flag.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

SYSTEM_CONFIG = Path("/etc/dmd/config.json")
# A file in the home directory overrides the system one, for development.
USER_CONFIG = Path("~/.config/dmd/config.json")

DEFAULT_PORT = 3150
DEFAULT_SSH_PORT = 2222


class ConfigError(Exception):
    """A setting is invalid; the message names the key and what is wrong."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/dmd")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dmd"


@dataclass
class Config:
    listen: str = f"0.0.0.0:{DEFAULT_PORT}"
    data_dir: str = ""
    database: str = ""  # empty: SQLite file in data_dir
    sessions: str = "memory"
    session_secret: str = ""  # empty: generated once, kept in data_dir
    session_max_age: int = 14 * 24 * 3600
    public_url: str = ""  # how browsers and agents reach dmd; empty: derived from listen
    # The reverse proxies whose X-Forwarded-For/-Proto/-Host count: addresses or networks (a JSON
    # list, or comma-separated in the environment and on the command line). The old boolean still
    # reads: true means loopback only (127.0.0.0/8, ::1), false none.
    trust_proxy: list[str] = field(default_factory=list)
    local_node: bool = False  # run an agent in-process against the local Docker socket
    local_port_pool: str = "20000-29999"  # the local node's host ports for port maps (TCP and UDP)
    local_port_forwarding: str = "auto"  # auto | kernel | proxy (see the agent's port_forwarding)
    log_level: str = "info"
    max_body_bytes: int = 1024 * 1024
    agent_heartbeat_s: float = 10.0
    join_token_ttl_s: int = 3600
    # Image uploads and copies are spooled here, never beside the SQLite file; empty: <data_dir>/blobs.
    spool_dir: str = ""
    spool_min_free_bytes: int = 1024**3  # an upload is refused (507) when it would leave less free
    file_upload_max_bytes: int = 4 * 1024**3  # one file uploaded into an instance from its page (413 beyond)
    registry_allow: str = ""  # registries on private/loopback addresses pulls may reach (hosts, networks)
    # The SSH gateway (dmd.ssh): HOST:PORT, port 0 for any free one (tests); "" or "off": none.
    ssh_listen: str = f"0.0.0.0:{DEFAULT_SSH_PORT}"
    streams_per_user: int = 16  # terminals, SSH sessions, tunnels and file copies a user has open at once

    # parsed forms, filled by validate()
    host: str = field(default="", init=False, repr=False)
    port: int = field(default=DEFAULT_PORT, init=False, repr=False)
    proxy_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(), init=False, repr=False)
    ssh_host: str = field(default="", init=False, repr=False)
    ssh_port: int | None = field(default=None, init=False, repr=False)  # None: no gateway

    def validate(self) -> Config:
        m = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d{1,5})", self.listen)
        if not m or not 0 < int(m.group(2)) < 65536:
            raise ConfigError("listen", f"expected HOST:PORT (for example 0.0.0.0:3150), got {self.listen!r}")
        self.host, self.port = m.group(1) or "0.0.0.0", int(m.group(2))
        self.ssh_host, self.ssh_port = parse_ssh_listen(self.ssh_listen)
        if not self.data_dir:
            self.data_dir = str(default_data_dir())
        self.data_dir = str(Path(self.data_dir).expanduser())
        if not self.database:
            self.database = "sqlite:///" + str(Path(self.data_dir) / "dmd.sqlite3")
        if not re.match(r"^(sqlite|postgres|postgresql|mysql|mariadb)(\+\w+)?://", self.database):
            raise ConfigError(
                "database",
                "expected sqlite:///PATH, postgresql://USER@HOST/DB or mysql://USER@HOST/DB, "
                f"got {redact(self.database)!r}",
            )
        if not (
            self.sessions == "memory"
            or re.match(r"^rediss?://", self.sessions)
            or re.match(r"^memcached://[^/:]+(:\d+)?/?$", self.sessions)
        ):
            raise ConfigError(
                "sessions",
                f"expected memory, redis://HOST:PORT/DB or memcached://HOST:PORT, got {redact(self.sessions)!r}",
            )
        self.trust_proxy, self.proxy_networks = parse_proxies(self.trust_proxy)
        if self.session_secret and len(self.session_secret) < 32:
            raise ConfigError("session_secret", "must be at least 32 characters")
        if self.session_max_age < 60:
            raise ConfigError("session_max_age", "must be at least 60 seconds")
        if self.public_url and not re.match(r"^https?://[^/\s]+(/\S*)?$", self.public_url):
            raise ConfigError("public_url", f"expected http(s)://HOST[:PORT][/PATH], got {self.public_url!r}")
        self.public_url = self.public_url.rstrip("/")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level", "expected debug, info, warning or error")
        if self.max_body_bytes < 1024:
            raise ConfigError("max_body_bytes", "must be at least 1024")
        if self.file_upload_max_bytes < 1:
            raise ConfigError("file_upload_max_bytes", "must be at least 1")
        from agent.ports.pools import PoolError, parse_ranges

        try:
            parse_ranges(self.local_port_pool, "local_port_pool")
        except PoolError as e:
            raise ConfigError("local_port_pool", str(e).removeprefix("local_port_pool: ")) from None
        if self.local_port_forwarding not in ("auto", "kernel", "proxy"):
            raise ConfigError("local_port_forwarding",
                              f"expected auto, kernel or proxy, got {self.local_port_forwarding!r}")
        if not 1 <= self.agent_heartbeat_s <= 300:
            raise ConfigError("agent_heartbeat_s", "must be between 1 and 300 seconds")
        if not 60 <= self.join_token_ttl_s <= 30 * 24 * 3600:
            raise ConfigError("join_token_ttl_s", "must be between 60 seconds and 30 days")
        self.spool_dir = str(Path(self.spool_dir or Path(self.data_dir) / "blobs").expanduser())
        if self.database.startswith("sqlite") and Path(self.spool_dir).resolve() == Path(
                self.database.split(":///", 1)[-1]).expanduser().resolve().parent:
            raise ConfigError("spool_dir", "must not be the folder that holds the SQLite database; "
                              "use a folder of its own (the default is <data_dir>/blobs)")
        if self.spool_min_free_bytes < 0:
            raise ConfigError("spool_min_free_bytes", "must be 0 or more")
        if not 1 <= self.streams_per_user <= 1000:
            raise ConfigError("streams_per_user", "must be between 1 and 1000")
        from dmd.registries import parse_allow

        try:
            parse_allow(self.registry_allow)
        except ValueError as e:
            raise ConfigError("registry_allow", str(e)) from None
        return self

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url
        host = "localhost" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def parse_ssh_listen(value: str) -> tuple[str, int | None]:
    """`ssh_listen` as (host, port); port None when the gateway is off ("" or "off")."""
    text = value.strip()
    if text.lower() in ("", "off", "none", "no", "false", "0"):
        return "", None
    m = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d{1,5})", text)
    if not m or int(m.group(2)) > 65535:
        raise ConfigError("ssh_listen", f"expected HOST:PORT (for example 0.0.0.0:{DEFAULT_SSH_PORT}) or off, "
                                        f"got {value!r}")
    return m.group(1) or "0.0.0.0", int(m.group(2))


LOOPBACK = ["127.0.0.0/8", "::1/128"]


def parse_proxies(value: object) -> tuple[list[str], tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]:
    """`trust_proxy` as a list of networks. Raises ConfigError naming the bad entry."""
    if isinstance(value, bool):
        entries = LOOPBACK if value else []
    elif isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            entries = LOOPBACK
        elif low in ("0", "false", "no", "off", ""):
            entries = []
        else:
            entries = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        entries = [v.strip() for v in value]
    else:
        raise ConfigError("trust_proxy", f"expected a list of proxy addresses or networks, got {value!r}")
    nets = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError("trust_proxy", f"{entry!r} is not an IP address or network (for example "
                                             "127.0.0.1, 10.0.0.0/8 or ::1)") from None
    return [str(n) for n in nets], tuple(nets)


def redact(url: str) -> str:
    """Hide a password in a URL before it goes into an error message."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def setting_names() -> list[str]:
    return [f.name for f in fields(Config) if f.init]


def _coerce(key: str, value: Any, typ: type) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected a whole number, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a whole number, got {value!r}") from None
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a number, got {value!r}") from None
    if typ is list:
        return value  # checked by Config.validate (parse_proxies)
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {value!r}")
    return value


_TYPES: dict[str, type] = {"str": str, "int": int, "bool": bool, "float": float, "list[str]": list}


def _apply(cfg: Config, values: dict[str, Any], source: str) -> None:
    known = {f.name: f for f in fields(Config) if f.init}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(key, f"unknown setting (in {source}); known: {', '.join(known)}")
        typ = _TYPES[str(known[key].type)]
        setattr(cfg, key, _coerce(key, value, typ))


def load_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError("config", f"cannot read {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError("config", f"{path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must hold a JSON object")
    return data


def load(
    config_path: str | None = None,
    cli: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the effective configuration. Raises ConfigError."""
    env = os.environ if environ is None else environ
    cfg = Config()
    config_path = config_path or env.get("DMD_CONFIG")
    if config_path:
        _apply(cfg, load_file(Path(config_path)), config_path)
    else:
        for p in (SYSTEM_CONFIG, USER_CONFIG.expanduser()):
            if p.is_file():
                _apply(cfg, load_file(p), str(p))
    env_values = {
        name: env[f"DMD_{name.upper()}"] for name in setting_names() if f"DMD_{name.upper()}" in env
    }
    _apply(cfg, env_values, "environment")
    _apply(cfg, {k: v for k, v in (cli or {}).items() if v is not None}, "command line")
    return cfg.validate()
