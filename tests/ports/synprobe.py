"""Send one raw TCP SYN out of eth0 and tell whether a SYN-ACK came back (standard library only).

Run inside a container's network namespace (nsenter) by tests/ports: it forges what a container
with CAP_NET_RAW can send, such as a SYN to the host's 127.0.0.1 (CVE-2020-8558).

    python synprobe.py SRC_MAC DST_MAC SRC_IP DST_IP DST_PORT   # prints synack, flags-0x.., or nothing
"""

from __future__ import annotations

import random
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, sport: int, dport: int) -> bytes:
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, random.randrange(1 << 32), 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.randrange(1 << 16), 0, 64,
                     socket.IPPROTO_TCP, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00" + ip + tcp


def main(argv: list[str]) -> str:
    src_mac, dst_mac, src_ip, dst_ip, dport = argv[0], argv[1], argv[2], argv[3], int(argv[4])
    sport = random.randrange(40000, 60000)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800)) as s:
        s.bind(("eth0", 0))
        s.settimeout(0.2)
        s.send(syn_frame(src_mac, dst_mac, src_ip, dst_ip, sport, dport))
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                packet = s.recv(65535)[14:]
            except TimeoutError:
                continue
            if len(packet) < 40 or packet[9] != socket.IPPROTO_TCP:
                continue
            ihl = (packet[0] & 15) * 4
            sp, dp = struct.unpack("!HH", packet[ihl:ihl + 4])
            if sp == dport and dp == sport:
                flags = packet[ihl + 13]
                return "synack" if flags & 0x12 == 0x12 else f"flags-{flags:#x}"
    return "nothing"


if __name__ == "__main__":
    print(main(sys.argv[1:]))
