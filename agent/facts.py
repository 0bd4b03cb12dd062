"""Host facts the agent reports to dmd: OS, CPU, memory, disk, addresses, GPUs.

Standard library only, no outside lookups: addresses come from the local
interfaces (``getifaddrs`` through ctypes, with a /proc fallback on Linux); a
public address is included only when the operator configured one.

Public API::

    facts = await collect_facts(docker_data_root=None, public_address=None)
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import ipaddress
import logging
import os
import platform
import re
import socket
import sys
from typing import Any

from agent.gpu import DEFAULT_TIMEOUT, detect_gpus, read_text, under_root

__all__ = [
    "collect_facts",
    "cpu_model",
    "disk_usage_mb",
    "local_addresses",
    "memory_mb",
    "os_release",
    "parse_meminfo",
    "parse_os_release",
]

log = logging.getLogger(__name__)

DEFAULT_DOCKER_DATA_ROOT = "/var/lib/docker"

# Interfaces that never carry a node's reachable address: container bridges and
# their veth ends, libvirt's default NAT bridge, CNI plugins.
_VIRTUAL_IFACE_RE = re.compile(
    r"^(docker\d+|br-[0-9a-f]{12}|veth.*|virbr\d+(-nic)?|cni\d+|flannel\..*|cali.*|podman\d+)$"
)


# --------------------------------------------------------------------------- OS


def parse_os_release(text: str) -> dict[str, str]:
    """``KEY=value`` / ``KEY="value"`` lines of os-release(5)."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        result[key.strip()] = value.replace('\\"', '"').replace("\\\\", "\\")
    return result


def os_release(*, root: str = "/") -> dict[str, str | None]:
    """``{"id", "name", "version", "pretty_name"}`` of the running OS."""
    if sys.platform == "darwin" and root == "/":
        version = platform.mac_ver()[0] or None
        return {
            "id": "macos",
            "name": "macOS",
            "version": version,
            "pretty_name": f"macOS {version}" if version else "macOS",
        }
    text = read_text(under_root(root, "/etc/os-release")) or read_text(
        under_root(root, "/usr/lib/os-release")
    )
    info = parse_os_release(text) if text else {}
    name = info.get("NAME") or platform.system() or None
    version = info.get("VERSION_ID") or info.get("VERSION") or None
    return {
        "id": info.get("ID") or None,
        "name": name,
        "version": version,
        "pretty_name": info.get("PRETTY_NAME") or " ".join(p for p in (name, version) if p),
    }


# --------------------------------------------------------------------------- CPU / memory


def _sysctl_value(name: str) -> bytes | None:
    """``sysctlbyname`` on macOS/BSD (no subprocess)."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        size = ctypes.c_size_t(0)
        if libc.sysctlbyname(name.encode(), None, ctypes.byref(size), None, 0) != 0:
            return None
        buf = ctypes.create_string_buffer(size.value)
        if libc.sysctlbyname(name.encode(), buf, ctypes.byref(size), None, 0) != 0:
            return None
        return buf.raw[: size.value]
    except (OSError, AttributeError):
        return None


def cpu_model(*, root: str = "/") -> str | None:
    """CPU model name: ``model name`` in /proc/cpuinfo (x86), else the ARM fields."""
    text = read_text(under_root(root, "/proc/cpuinfo"))
    if text:
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in fields and value.strip():
                fields[key.strip()] = value.strip()
        for key in ("model name", "Model", "Hardware", "cpu model", "Processor", "cpu"):
            if key in fields:
                return fields[key]
    if sys.platform == "darwin" and root == "/":
        raw = _sysctl_value("machdep.cpu.brand_string")
        if raw:
            return raw.rstrip(b"\x00").decode("utf-8", "replace") or None
    return platform.processor() or platform.machine() or None


def _cpu_count(root: str) -> int:
    if root != "/":
        text = read_text(under_root(root, "/proc/cpuinfo")) or ""
        count = sum(1 for line in text.splitlines() if re.match(r"^processor\s*:", line))
        if count:
            return count
    return os.cpu_count() or 1


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as ``{"MemTotal": kB, ...}``."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+):\s+(\d+)", line)
        if m:
            result[m.group(1)] = int(m.group(2))
    return result


def memory_mb(*, root: str = "/") -> tuple[int | None, int | None]:
    """(total, available) memory in MiB."""
    text = read_text(under_root(root, "/proc/meminfo"))
    if text:
        info = parse_meminfo(text)
        total = info.get("MemTotal")
        available = info.get("MemAvailable")
        if available is None and total is not None:  # kernels before 3.14
            available = info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
        return (
            total // 1024 if total is not None else None,
            available // 1024 if available is not None else None,
        )
    if sys.platform == "darwin" and root == "/":
        raw = _sysctl_value("hw.memsize")
        if raw and len(raw) == 8:
            return int.from_bytes(raw, sys.byteorder) // (1024 * 1024), None
    return None, None


def disk_usage_mb(path: str) -> tuple[int | None, int | None]:
    """(total, free for unprivileged users) of the filesystem holding ``path``, in MiB."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None, None
    return (st.f_blocks * st.f_frsize) // (1024 * 1024), (st.f_bavail * st.f_frsize) // (
        1024 * 1024
    )


# --------------------------------------------------------------------------- addresses


class _Sockaddr(ctypes.Structure):
    _fields_ = [("sa_family", ctypes.c_uint16), ("sa_data", ctypes.c_uint8 * 14)]


class _SockaddrBSD(ctypes.Structure):
    _fields_ = [
        ("sa_len", ctypes.c_uint8),
        ("sa_family", ctypes.c_uint8),
        ("sa_data", ctypes.c_uint8 * 14),
    ]


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = [
    ("ifa_next", ctypes.POINTER(_Ifaddrs)),
    ("ifa_name", ctypes.c_char_p),
    ("ifa_flags", ctypes.c_uint),
    ("ifa_addr", ctypes.c_void_p),
    ("ifa_netmask", ctypes.c_void_p),
    ("ifa_dstaddr", ctypes.c_void_p),
    ("ifa_data", ctypes.c_void_p),
]

_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_BSD_SOCKADDR = sys.platform == "darwin" or "bsd" in sys.platform


def _getifaddrs() -> list[tuple[str, int, str]] | None:
    """(interface, flags, address) for every IPv4/IPv6 address, or None if unavailable."""
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else ctypes.CDLL(None)
        getifaddrs = libc.getifaddrs
        freeifaddrs = libc.freeifaddrs
    except (OSError, AttributeError):
        return None
    getifaddrs.argtypes = [ctypes.POINTER(ctypes.POINTER(_Ifaddrs))]
    getifaddrs.restype = ctypes.c_int
    freeifaddrs.argtypes = [ctypes.POINTER(_Ifaddrs)]
    freeifaddrs.restype = None
    head = ctypes.POINTER(_Ifaddrs)()
    if getifaddrs(ctypes.byref(head)) != 0:
        return None
    result: list[tuple[str, int, str]] = []
    try:
        node = head
        while node:
            entry = node.contents
            node = entry.ifa_next
            if not entry.ifa_addr or not entry.ifa_name:
                continue
            sa_type = _SockaddrBSD if _BSD_SOCKADDR else _Sockaddr
            family = sa_type.from_address(entry.ifa_addr).sa_family
            name = entry.ifa_name.decode("utf-8", "replace")
            if family == socket.AF_INET:
                raw = ctypes.string_at(entry.ifa_addr + 4, 4)
                result.append((name, entry.ifa_flags, socket.inet_ntop(socket.AF_INET, raw)))
            elif family == socket.AF_INET6:
                raw = ctypes.string_at(entry.ifa_addr + 8, 16)
                result.append((name, entry.ifa_flags, socket.inet_ntop(socket.AF_INET6, raw)))
    finally:
        freeifaddrs(head)
    return result


def _proc_addresses(root: str) -> list[tuple[str, int, str]]:
    """Linux fallback: IPv6 from /proc/net/if_inet6, IPv4 from /proc/net/fib_trie."""
    result: list[tuple[str, int, str]] = []
    text = read_text(under_root(root, "/proc/net/if_inet6")) or ""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or len(parts[0]) != 32:
            continue
        try:
            addr = ipaddress.IPv6Address(bytes.fromhex(parts[0]))
        except ValueError:
            continue
        flags = _IFF_UP | (_IFF_LOOPBACK if parts[5] == "lo" else 0)
        result.append((parts[5], flags, str(addr)))
    # fib_trie lists local addresses as "/32 host LOCAL" leaves; it has no interface
    # names, so interface filtering is not possible here.
    trie = read_text(under_root(root, "/proc/net/fib_trie")) or ""
    last_ip: str | None = None
    seen: set[str] = set()
    for line in trie.splitlines():
        m = re.search(r"\|--\s+(\d+\.\d+\.\d+\.\d+)", line)
        if m:
            last_ip = m.group(1)
        elif "/32 host LOCAL" in line and last_ip and last_ip not in seen:
            seen.add(last_ip)
            loop = ipaddress.IPv4Address(last_ip).is_loopback
            result.append(("?", _IFF_UP | (_IFF_LOOPBACK if loop else 0), last_ip))
    return result


def local_addresses(*, root: str = "/") -> dict[str, list[str]]:
    """Non-loopback addresses of local interfaces: ``{"ipv4": [...], "ipv6": [...]}``.

    Container and VM bridges (docker0, br-*, veth*, virbr*, ...) are skipped.
    Link-local IPv6 addresses are listed only when there is no other IPv6 address.
    No outside service is asked.
    """
    entries = _getifaddrs() if root == "/" else None
    if entries is None:
        entries = _proc_addresses(root)
    ipv4: list[str] = []
    ipv6: list[str] = []
    link_local: list[str] = []
    for name, flags, text in entries:
        if flags & _IFF_LOOPBACK or not flags & _IFF_UP or _VIRTUAL_IFACE_RE.match(name):
            continue
        try:
            addr = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        if addr.is_loopback or addr.is_unspecified:
            continue
        if isinstance(addr, ipaddress.IPv4Address):
            if str(addr) not in ipv4:
                ipv4.append(str(addr))
        elif addr.is_link_local:
            scoped = f"{addr}%{name}" if name != "?" else str(addr)
            if scoped not in link_local:
                link_local.append(scoped)
        elif str(addr) not in ipv6:
            ipv6.append(str(addr))
    return {"ipv4": ipv4, "ipv6": ipv6 or link_local}


# --------------------------------------------------------------------------- facts


def _disk_path(docker_data_root: str | None) -> str:
    """The container runtime's data root (default /var/lib/docker if present, else /)."""
    if docker_data_root is None:
        return DEFAULT_DOCKER_DATA_ROOT if os.path.isdir(DEFAULT_DOCKER_DATA_ROOT) else "/"
    if not os.path.exists(docker_data_root):
        log.warning("container data root %s does not exist; reporting / instead", docker_data_root)
        return "/"
    return docker_data_root


async def collect_facts(
    *,
    docker_data_root: str | None = None,
    public_address: str | None = None,
    root: str = "/",
    gpu_timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Everything dmd shows about a node, as a JSON-able dict.

    Keys: hostname, os {id, name, version, pretty_name}, kernel, arch, cpu_model,
    cpu_count, memory_total_mb, memory_available_mb, disk_path, disk_total_mb,
    disk_free_mb, addresses {ipv4, ipv6}, public_address (only when given), gpus
    (``GpuInfo.to_dict()`` list). The container runtime is added by its driver.

    ``docker_data_root`` is where the container runtime keeps its data (default
    /var/lib/docker if it exists, else /). ``root`` re-roots /proc, /etc and /sys
    reads (tests).
    """
    gpus = await detect_gpus(timeout=gpu_timeout, root=root)
    # File reads and getifaddrs (whose libc lookup runs ldconfig): off the event loop.
    facts = await asyncio.to_thread(_host_facts, docker_data_root, root)
    facts["gpus"] = [gpu.to_dict() for gpu in gpus]
    if public_address:
        facts["public_address"] = public_address
    return facts


def _host_facts(docker_data_root: str | None, root: str) -> dict[str, Any]:
    total_mb, available_mb = memory_mb(root=root)
    disk_path = _disk_path(docker_data_root)
    disk_total, disk_free = disk_usage_mb(disk_path)
    return {
        "hostname": socket.gethostname(),
        "os": os_release(root=root),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": cpu_model(root=root),
        "cpu_count": _cpu_count(root),
        "memory_total_mb": total_mb,
        "memory_available_mb": available_mb,
        "disk_path": disk_path,
        "disk_total_mb": disk_total,
        "disk_free_mb": disk_free,
        "addresses": local_addresses(root=root),
    }
