"""A tiny TCP peer for the transparent-proxy e2e test, run inside a network namespace (`ip netns exec`).

    serve ADDR PORT NAME      answer every connection with one line: NAME and the connection's original
                              destination (SO_ORIGINAL_DST: where the client meant to go before a REDIRECT;
                              without connection tracking, the address it reached)
    connect ADDR PORT [UID]   connect, as UID when given (the kuma-dp user), and print the answer
    serve-udp ADDR PORT NAME [UID]  answer every datagram with NAME (a DNS server, or kuma-dp's DNS proxy
                              running as UID)
    query ADDR PORT [UID]     send a datagram, print the answer and the address it came from
    serve-dns ADDR PORT NAME IP   a DNS server (the host's resolver): NAME has the address IP, no other
                              name exists (dnspython: run by the venv's Python)
    serve-http ADDR PORT NAME answer every HTTP request with NAME and the X-Forwarded-Client-Cert it came with
    forward ADDR PORT TO_ADDR TO_PORT  relay every connection to ADDR:PORT to TO_ADDR:TO_PORT (a namespace's
                              way to a control plane outside it, on the address its certificate names)
    http-get ADDR PORT [UID]  GET / over HTTP/1.1 (Host: ADDR), as UID when given; print the status and body,
                              or `refused` when the connection is closed or reset without an answer

Standard library only but for serve-dns; `connect` drops to UID after Python has started, so the venv
need not be readable by that user.
"""
from __future__ import annotations

import os
import socket
import struct
import sys
import threading

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


def become(uid: int | None) -> None:
    """Before any socket: iptables' owner match sees who created the socket."""
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def serve_udp(addr: str, port: int, name: str, uid: int | None) -> None:
    become(uid)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    print("ready", flush=True)
    while True:
        _, peer = sock.recvfrom(512)
        sock.sendto(name.encode(), peer)


def query(addr: str, port: int, uid: int | None) -> None:
    become(uid)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)
    with sock:
        sock.sendto(b"query", (addr, port))
        answer, (host, source_port) = sock.recvfrom(512)
        print(f"{answer.decode()} {host}:{source_port}", flush=True)


def connect(addr: str, port: int, uid: int | None) -> None:
    become(uid)
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.settimeout(10)
    with conn:
        conn.connect((addr, port))   # a numeric address: no resolver, nothing to read from disk as `uid`
        print(conn.makefile().readline().strip(), flush=True)


def serve_dns(addr: str, port: int, name: str, ip: str) -> None:
    import dns.message
    import dns.name
    import dns.rcode
    import dns.rdatatype
    import dns.rrset

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    print("ready", flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        question = query.question[0]
        if question.name != dns.name.from_text(name):
            reply.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A:
            reply.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", ip))
        sock.sendto(reply.to_wire(), peer)


def serve_http(addr: str, port: int, name: str) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:   # noqa: N802
            body = f"{name} xfcc={self.headers.get('X-Forwarded-Client-Cert', '')}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((addr, port), Handler)
    print("ready", flush=True)
    server.serve_forever()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def forward(addr: str, port: int, to_addr: str, to_port: int) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((addr, port))
    listener.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        upstream = socket.create_connection((to_addr, to_port))
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def http_get(addr: str, port: int, uid: int | None) -> None:
    """By hand on a socket: after `become`, Python may not read its own library (lazy imports) as `uid`."""
    become(uid)
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.settimeout(10)
    answer = b""
    try:
        with conn:
            conn.connect((addr, port))
            conn.sendall(f"GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n".encode())
            while data := conn.recv(65536):
                answer += data
    except ConnectionError:
        pass
    if not answer:
        print("refused", flush=True)
        return
    head, _, body = answer.partition(b"\r\n\r\n")
    print(head.split(b" ")[1].decode(), body.decode(errors="replace"), flush=True)


if __name__ == "__main__":
    command, address, number, *rest = sys.argv[1:]
    if command == "serve":
        serve(address, int(number), rest[0])
    elif command == "serve-udp":
        serve_udp(address, int(number), rest[0], int(rest[1]) if len(rest) > 1 else None)
    elif command == "serve-dns":
        serve_dns(address, int(number), rest[0], rest[1])
    elif command == "serve-http":
        serve_http(address, int(number), rest[0])
    elif command == "forward":
        forward(address, int(number), rest[0], int(rest[1]))
    elif command == "http-get":
        http_get(address, int(number), int(rest[0]) if rest else None)
    elif command == "query":
        query(address, int(number), int(rest[0]) if rest else None)
    else:
        connect(address, int(number), int(rest[0]) if rest else None)
