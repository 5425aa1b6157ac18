"""A tiny TCP peer for the transparent-proxy e2e test, run inside a network namespace (`ip netns exec`).

    serve ADDR PORT NAME      answer every connection with one line: NAME and the connection's original
                              destination (SO_ORIGINAL_DST: where the client meant to go before a REDIRECT;
                              without connection tracking, the address it reached)
    connect ADDR PORT [UID]   connect, as UID when given (the kuma-dp user), and print the answer

Standard library only; `connect` drops to UID after Python has started, so the venv need not be
readable by that user.
"""
from __future__ import annotations

import os
import socket
import struct
import sys

SO_ORIGINAL_DST = 80   # linux/netfilter_ipv4.h


def serve(addr: str, port: int, name: str) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((addr, port))
    listener.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        with conn:
            try:
                raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
                dst_port, dst_ip = struct.unpack("!2xH4s8x", raw)
                original = f"{socket.inet_ntoa(dst_ip)}:{dst_port}"
            except OSError:   # no connection tracking here: nothing was rewritten
                host, port = conn.getsockname()[:2]
                original = f"{host}:{port}"
            conn.sendall(f"{name} {original}\n".encode())


def connect(addr: str, port: int, uid: int | None) -> None:
    if uid is not None:   # before the socket: iptables' owner match sees who created it
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.settimeout(10)
    with conn:
        conn.connect((addr, port))   # a numeric address: no resolver, nothing to read from disk as `uid`
        print(conn.makefile().readline().strip(), flush=True)


if __name__ == "__main__":
    command, address, number, *rest = sys.argv[1:]
    if command == "serve":
        serve(address, int(number), rest[0])
    else:
        connect(address, int(number), int(rest[0]) if rest else None)
