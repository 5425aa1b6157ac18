"""A TCP front that routes each connection by its first bytes and splices it to a local backend.

One thread of its own, epoll and plain recv/send: the bytes of thousands of long-lived connections
never pass through the xDS event loop, and the GIL is held only for a few microseconds per read.
`route` sees what the client sent so far and names the backend (an abstract unix socket), asks for
more (None) or refuses the connection (ValueError). What was read to decide goes to the backend
first; then bytes flow both ways as they are, half-closes included, and when both directions are
done both sockets are closed (nothing is left in CLOSE-WAIT).
"""
from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time
from typing import Callable

log = logging.getLogger("appliance.dpserver")

# what the client sent so far -> the backend's abstract socket name; None: not enough yet; ValueError: refuse
Route = Callable[[bytes], "str | None"]
CHUNK = 256 * 1024
MAX_HELLO = 64 * 1024
HELLO_TIMEOUT = 10.0
_IN, _OUT, _ERR = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR | select.EPOLLHUP


class _Side:
    __slots__ = ("sock", "fd", "peer", "out", "eof", "mask")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer: _Side | None = None
        self.out = b""          # read from the peer, not yet written to this side
        self.eof = False        # this side sent FIN
        self.mask = 0


class _Pending:
    __slots__ = ("sock", "hello", "deadline", "backend")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.hello = b""
        self.deadline = time.monotonic() + HELLO_TIMEOUT
        self.backend = ""       # chosen, still to be connected (its listen queue was full)


# a host without IPv6 (disabled in the kernel, no ::1) still serves IPv4 on the wildcard address
_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)


def listening_sockets(host: str, port: int, backlog: int = 4096) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address of `host` (as asyncio's create_server).

    `host` "" is every interface, IPv4 and IPv6 (as Kuma's ":5678"): Envoy resolves `localhost` to ::1."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as e:
                if not host and family == socket.AF_INET6 and e.errno in _NO_IPV6:
                    continue
                raise
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as e:
                if not host and family == socket.AF_INET6 and e.errno in _NO_IPV6:
                    sockets.remove(sock)
                    sock.close()
                    continue
                raise
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Splicer:
    def __init__(self, listeners: list[socket.socket], route: Route) -> None:
        self.listeners = {s.fileno(): s for s in listeners}
        self.route = route
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        self._sides: dict[int, _Side] = {}
        self._pending: dict[int, _Pending] = {}
        self._thread = threading.Thread(target=self._run, name="dp-front", daemon=True)
        self._stopping = False
        self._next_expire = 0.0

    def start(self) -> None:
        for fd in self.listeners:
            self._epoll.register(fd, _IN)
        self._epoll.register(self._wake_r, _IN)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        # closed here, not by the thread: it may see `_stopping` at a poll timeout and end before the
        # write above, which would then hit a closed (or reused) descriptor
        os.close(self._wake_r)
        os.close(self._wake_w)

    @property
    def connections(self) -> int:
        return len(self._sides) // 2

    # --- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                timeout = 0.05 if any(p.backend for p in self._pending.values()) else 1.0
                for fd, events in self._epoll.poll(timeout):
                    try:
                        self._event(fd, events)
                    except Exception:   # one connection's trouble must not stop the front
                        log.exception("DP server front: connection failed")
                        self._drop(fd)
                self._expire()
        finally:
            for fd in list(self._sides) + list(self._pending):
                self._drop(fd)
            for sock in self.listeners.values():
                sock.close()
            self._epoll.close()

    def _event(self, fd: int, events: int) -> None:
        if fd in self.listeners:
            self._accept(self.listeners[fd])
        elif fd in self._pending:
            self._hello(self._pending[fd])
        elif fd in self._sides:
            side = self._sides[fd]
            peer = side.peer
            if events == _IN and peer is not None and not peer.out:
                # the common case, kept short: read what came, write it all to the other side
                try:
                    data = side.sock.recv(CHUNK)
                    sent = peer.sock.send(data) if data else 0
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return self._close_pair(side)
                if data and sent == len(data):
                    return
                if data:
                    peer.out = data[sent:]
                    self._flush(peer)
                    return
                return self._eof(side)
            if events & _OUT:
                self._flush(side)
            if events & (_IN | _ERR) and self._sides.get(fd) is side:
                self._read(side)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:   # e.g. out of file descriptors: keep serving the others
                log.warning("DP server: accept failed: %s", e)
                return
            sock.setblocking(False)
            # small xDS frames must not wait for Nagle (asyncio sets this too)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pending[sock.fileno()] = _Pending(sock)
            self._epoll.register(sock.fileno(), _IN)

    def _hello(self, pending: _Pending) -> None:
        if not pending.backend:
            try:
                data = pending.sock.recv(MAX_HELLO)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                return self._drop(pending.sock.fileno())
            pending.hello += data
            try:
                backend = self.route(pending.hello)
            except ValueError:
                backend = None
                pending.hello = b"x" * MAX_HELLO
            if backend is None:
                if len(pending.hello) >= MAX_HELLO:
                    self._drop(pending.sock.fileno())
                return
            pending.backend = backend
            self._epoll.modify(pending.sock.fileno(), 0)   # nothing more is read until the backend is there
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.setblocking(False)
        try:
            upstream.connect("\0" + pending.backend)
        except (BlockingIOError, InterruptedError):
            upstream.close()   # the backend's listen queue is full: try again shortly (see _run)
            return
        except OSError as e:
            upstream.close()
            log.warning("DP server backend %s unreachable: %s", pending.backend, e)
            return self._drop(pending.sock.fileno())
        del self._pending[pending.sock.fileno()]
        client, backend_side = _Side(pending.sock), _Side(upstream)
        client.peer, backend_side.peer = backend_side, client
        self._sides[client.fd] = client
        self._sides[backend_side.fd] = backend_side
        self._epoll.register(backend_side.fd, 0)
        backend_side.out = pending.hello
        self._flush(backend_side)
        self._update(client)

    def _expire(self) -> None:
        now = time.monotonic()
        if now < self._next_expire:
            return
        self._next_expire = now + 0.05
        for fd, pending in list(self._pending.items()):
            if pending.backend:
                self._hello(pending)
            elif now > pending.deadline:
                self._drop(fd)

    def _read(self, side: _Side) -> None:
        peer = side.peer
        assert peer is not None
        try:
            data = side.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._close_pair(side)
        if not data:
            return self._eof(side)
        peer.out = peer.out + data if peer.out else data   # more than nothing only on an error/hang-up event
        self._flush(peer)

    def _eof(self, side: _Side) -> None:
        side.eof = True
        assert side.peer is not None
        if not side.peer.out:
            self._shutdown(side.peer)
        self._update(side)
        self._update(side.peer)

    def _flush(self, side: _Side) -> None:
        """Write what waits for this side; a side that cannot take more stops its peer's reading."""
        if side.out:
            try:
                sent = side.sock.send(side.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return self._close_pair(side)
            side.out = side.out[sent:]
            if not side.out and side.peer is not None and side.peer.eof:
                self._shutdown(side)
        if self._sides.get(side.fd) is side:
            self._update(side)
            if side.peer is not None:
                self._update(side.peer)

    def _shutdown(self, side: _Side) -> None:
        try:
            side.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if side.eof:   # both directions are done
            self._close_pair(side)

    def _update(self, side: _Side) -> None:
        if self._sides.get(side.fd) is not side or side.peer is None:
            return
        mask = (_IN if not side.eof and not side.peer.out else 0) | (_OUT if side.out else 0)
        if mask != side.mask:
            side.mask = mask
            self._epoll.modify(side.fd, mask)

    def _close_pair(self, side: _Side) -> None:
        for one in (side, side.peer):
            if one is not None and self._sides.get(one.fd) is one:
                self._drop(one.fd)

    def _drop(self, fd: int) -> None:
        entry: _Side | _Pending | None = self._sides.pop(fd, None) or self._pending.pop(fd, None)
        if entry is None:
            return
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        entry.sock.close()
