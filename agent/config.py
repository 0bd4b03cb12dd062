"""The agent's configuration file, ``/etc/dmc/config.json`` (standard library only).

Written by ``dmc join`` and read by ``dmc run``::

    {"server": "https://dm.example.org", "node_id": 3, "credential": "dmn_...",
     "heartbeat_s": 10.0, "metrics_interval_s": 10.0,
     "docker_host": "unix:///var/run/docker.sock", "public_address": null,
     "port_pools": {"tcp": "20000-29999", "udp": "20000-29999"}, "port_forwarding": "auto"}

``port_pools`` are the host ports DM may hand out per protocol ("20000-20999,30000-30099" lists
several ranges); ``port_forwarding`` is "auto" (kernel rules when iptables is usable, else the
asyncio proxy), "kernel" or "proxy".

``import_max_expanded_bytes`` and ``import_max_ratio`` (optional, written only when set) bound
how far an imported compressed image archive may expand (agent.runtime.expansion).

Keys this version does not know are kept as they are (later features add their own).
The file holds the node's credential, so it is always written atomically (a temporary
file in the same folder, then a rename) with mode 0600, in a folder of mode 0700 when
the folder has to be created. ``credential`` is null after dmd deleted the node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agent.ports.pools import PoolError, PortPools
from agent.protocol import AGENT_WS_PATH, JOIN_PATH
from agent.runtime.image_tar import DEFAULT_EXPANSION, ExpansionLimits

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_DOCKER_HOST",
    "DEFAULT_PORT_FORWARDING",
    "PORT_FORWARDING_MODES",
    "AgentConfig",
    "ConfigError",
    "check_writable",
    "default_port_pools",
    "join_url",
    "load_config",
    "normalize_server_url",
    "save_config",
    "websocket_url",
    "write_json_atomic",
]

DEFAULT_CONFIG_PATH = "/etc/dmc/config.json"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_METRICS_INTERVAL_S = 10.0
_MIN_INTERVAL_S = 0.05
_MAX_INTERVAL_S = 3600.0
_DOCKER_SCHEMES = ("unix://", "tcp://", "http://", "https://", "npipe://")
DEFAULT_PORT_FORWARDING = "auto"
PORT_FORWARDING_MODES = ("auto", "kernel", "proxy")
_KNOWN_KEYS = (
    "server",
    "node_id",
    "credential",
    "heartbeat_s",
    "metrics_interval_s",
    "docker_host",
    "public_address",
    "port_pools",
    "port_forwarding",
    "import_max_expanded_bytes",
    "import_max_ratio",
)


def default_port_pools() -> dict[str, str]:
    return {"tcp": "20000-29999", "udp": "20000-29999"}


class ConfigError(Exception):
    """An invalid or unreadable configuration; ``key`` names the offending key, if any."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


# --------------------------------------------------------------------------- URLs


def normalize_server_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; ConfigError otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("server must be an http:// or https:// URL", "server")
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"server URL {url!r} is invalid: {exc}", "server") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"server must be an http:// or https:// URL, got {url!r}", "server")
    if parts.query or parts.fragment:
        raise ConfigError(f"server URL {url!r} must not have a query or fragment", "server")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("server URL must not contain a user name or password", "server")
    del port
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def websocket_url(server: str) -> str:
    """``http(s)://host[:port][/prefix]`` -> ``ws(s)://host[:port][/prefix]/agent/ws``."""
    parts = urlsplit(normalize_server_url(server))
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path + AGENT_WS_PATH, "", ""))


def join_url(server: str) -> str:
    """Where ``dmc join`` trades its token: ``{server}/api/v1/nodes/join``."""
    return normalize_server_url(server) + JOIN_PATH


# --------------------------------------------------------------------------- the config


def _number(data: dict[str, Any], key: str, default: float) -> float:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a number of seconds, got {value!r}", key)
    if not _MIN_INTERVAL_S <= value <= _MAX_INTERVAL_S:
        raise ConfigError(f"{key} must be between {_MIN_INTERVAL_S} and {_MAX_INTERVAL_S:g} seconds", key)
    return float(value)


def _or_default(value: Any, default: Any) -> Any:
    return default if value is None else value


@dataclass(slots=True)
class AgentConfig:
    """What ``dmc run`` needs. ``path`` is where it is saved (None: kept in memory only,
    as for dmd's in-process local node)."""

    server: str
    node_id: int
    credential: str | None
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    metrics_interval_s: float = DEFAULT_METRICS_INTERVAL_S
    docker_host: str = DEFAULT_DOCKER_HOST
    public_address: str | None = None
    port_pools: dict[str, str] = field(default_factory=default_port_pools)
    port_forwarding: str = DEFAULT_PORT_FORWARDING
    # How far a compressed image archive to import may expand (None: the defaults of
    # agent.runtime.image_tar.ExpansionLimits); written to the file only when set.
    import_max_expanded_bytes: int | None = None
    import_max_ratio: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept as they are
    path: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> AgentConfig:
        """Check every field; raises ConfigError naming the first bad key."""
        self.server = normalize_server_url(self.server)
        if isinstance(self.node_id, bool) or not isinstance(self.node_id, int) or self.node_id < 1:
            raise ConfigError(f"node_id must be a positive integer, got {self.node_id!r}", "node_id")
        if self.credential is not None and (
            not isinstance(self.credential, str)
            or not self.credential.strip()
            or len(self.credential) > 1024
            or any(c.isspace() for c in self.credential)
        ):
            raise ConfigError("credential must be a non-empty string without spaces, or null", "credential")
        values = {"heartbeat_s": self.heartbeat_s, "metrics_interval_s": self.metrics_interval_s}
        self.heartbeat_s = _number(values, "heartbeat_s", DEFAULT_HEARTBEAT_S)
        self.metrics_interval_s = _number(values, "metrics_interval_s", DEFAULT_METRICS_INTERVAL_S)
        if not isinstance(self.docker_host, str) or not self.docker_host.startswith(_DOCKER_SCHEMES):
            raise ConfigError(
                "docker_host must be a unix://, tcp://, http:// or https:// address, "
                f"got {self.docker_host!r}",
                "docker_host",
            )
        if self.public_address is not None and (
            not isinstance(self.public_address, str) or not self.public_address.strip()
        ):
            raise ConfigError("public_address must be a host name or address, or null", "public_address")
        try:
            PortPools.parse(self.port_pools)
        except PoolError as exc:
            raise ConfigError(f"port_pools: {exc}", "port_pools") from None
        if self.import_max_expanded_bytes is not None and (
            isinstance(self.import_max_expanded_bytes, bool) or not isinstance(self.import_max_expanded_bytes, int)
            or self.import_max_expanded_bytes < 1024 * 1024
        ):
            raise ConfigError("import_max_expanded_bytes must be a whole number of bytes, at least 1048576",
                              "import_max_expanded_bytes")
        if self.import_max_ratio is not None and (
            isinstance(self.import_max_ratio, bool) or not isinstance(self.import_max_ratio, int | float)
            or not self.import_max_ratio >= 2
        ):
            raise ConfigError("import_max_ratio must be a number of at least 2", "import_max_ratio")
        if self.port_forwarding not in PORT_FORWARDING_MODES:
            raise ConfigError(
                f"port_forwarding must be \"auto\", \"kernel\" or \"proxy\", got {self.port_forwarding!r}",
                "port_forwarding",
            )
        return self

    @property
    def expansion(self) -> ExpansionLimits:
        """How far an imported compressed archive may expand (image_tar.ExpansionLimits)."""
        limits = DEFAULT_EXPANSION
        if self.import_max_expanded_bytes is not None:
            limits = replace(limits, max_bytes=self.import_max_expanded_bytes)
        if self.import_max_ratio is not None:
            limits = replace(limits, max_ratio=float(self.import_max_ratio))
        return limits

    @property
    def pools(self) -> PortPools:
        """The parsed ``port_pools``."""
        return PortPools.parse(self.port_pools)

    @property
    def ws_url(self) -> str:
        return websocket_url(self.server)

    @classmethod
    def from_dict(cls, data: object, *, path: str | None = None) -> AgentConfig:
        if not isinstance(data, dict):
            raise ConfigError("the config must be a JSON object")
        for key in ("server", "node_id"):
            if key not in data:
                raise ConfigError(f"{key} is missing", key)
        extra = {k: v for k, v in data.items() if k not in _KNOWN_KEYS}
        return cls(
            server=data["server"],
            node_id=data["node_id"],
            credential=data.get("credential"),
            heartbeat_s=data.get("heartbeat_s", DEFAULT_HEARTBEAT_S),
            metrics_interval_s=data.get("metrics_interval_s", DEFAULT_METRICS_INTERVAL_S),
            docker_host=data.get("docker_host", DEFAULT_DOCKER_HOST),
            public_address=data.get("public_address"),
            port_pools=_or_default(data.get("port_pools"), default_port_pools()),
            port_forwarding=_or_default(data.get("port_forwarding"), DEFAULT_PORT_FORWARDING),
            import_max_expanded_bytes=data.get("import_max_expanded_bytes"),
            import_max_ratio=data.get("import_max_ratio"),
            extra=extra,
            path=path,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "server": self.server,
            "node_id": self.node_id,
            "credential": self.credential,
            "heartbeat_s": self.heartbeat_s,
            "metrics_interval_s": self.metrics_interval_s,
            "docker_host": self.docker_host,
            "public_address": self.public_address,
            "port_pools": dict(self.port_pools),
            "port_forwarding": self.port_forwarding,
        }
        for key in ("import_max_expanded_bytes", "import_max_ratio"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    def replace(self, **changes: Any) -> AgentConfig:
        """A validated copy with ``changes`` applied (the original is left alone)."""
        return dataclasses.replace(self, **changes)


def load_config(path: str = DEFAULT_CONFIG_PATH) -> AgentConfig:
    """Read and check the config file. ConfigError says what is wrong in one line."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (run `dmc join <server-url> <token>` first)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    try:
        return AgentConfig.from_dict(data, path=path)
    except ConfigError as exc:
        raise ConfigError(f"invalid config file {path}: {exc}", exc.key) from None


# --------------------------------------------------------------------------- writing


def _ensure_dir(directory: str) -> None:
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)  # makedirs' mode is filtered by the umask


def check_writable(path: str) -> None:
    """Fail early (OSError) when ``path`` could not be written, creating its folder."""
    directory = os.path.dirname(os.path.abspath(path))
    _ensure_dir(directory)
    fd, tmp = tempfile.mkstemp(prefix=".dmc-check-", dir=directory)
    os.close(fd)
    os.unlink(tmp)
    if os.path.isdir(path):
        raise IsADirectoryError(21, "Is a directory", path)


def write_json_atomic(path: str, data: dict[str, Any], *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, with ``mode``."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    _ensure_dir(directory)
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_config(config: AgentConfig, path: str | None = None) -> None:
    """Write ``config`` to ``path`` (default: ``config.path``); nothing when both are None."""
    target = path or config.path
    if target is None:
        return
    write_json_atomic(target, config.to_dict())
