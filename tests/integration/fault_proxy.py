"""A fault-injecting TCP proxy for the tests: listens on 127.0.0.1, forwards every connection to a
real server (nfs-ganesha's NFSv4 port), and changes what it does at run time:

- `passthrough()`: forward both ways, accept new connections (the default);
- `delay(ms)`: hold every server→client packet for ms milliseconds before forwarding it (latency,
  not a bandwidth limit: packets stay pipelined and in order); `delay(0)` ends it;
- `drop_after(n)`: after n more server→client bytes (counted over all connections), reset every
  connection: a reply is cut in the middle (one shot; later connections pass again);
- `refuse()`: stop listening: new connections are refused by the kernel (RST);
- `blackhole()`: accept new connections and never answer nor connect them to the server;
- `close_all()`: close every open connection (both sides), like a server going away.

Counters (`stats()`) say how many connections were made, refused, blackholed and dropped, and how
many bytes went each way, so a test can prove its fault was really injected.

Runs in threads of the test process; `close()` stops everything. Only 127.0.0.0/8 is used.
"""

import heapq
import itertools
import socket
import struct
import threading
import time

PASS, REFUSE, BLACKHOLE = "pass", "refuse", "blackhole"


def _abort(sock):
    """Closes a socket with a RST (SO_LINGER 0), like a connection lost mid-stream."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _shutdown(sock)


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Connection:
    """One client connection and its server connection; two pump threads and a delayed sender."""

    def __init__(self, proxy, client, server):
        self.proxy = proxy
        self.client = client
        self.server = server
        self.closed = False
        self.lock = threading.Lock()
        self.queue = []  # (release time, sequence, bytes), server→client
        self.sequence = itertools.count()
        self.queued = threading.Condition(self.lock)
        self.threads = [threading.Thread(target=self._client_to_server, daemon=True),
                        threading.Thread(target=self._server_to_client, daemon=True),
                        threading.Thread(target=self._sender, daemon=True)]

    def start(self):
        for t in self.threads:
            t.start()

    def _client_to_server(self):
        try:
            while True:
                data = self.client.recv(1 << 16)
                if not data:
                    break
                self.proxy._count("bytes_to_server", len(data))
                self.server.sendall(data)
        except OSError:
            pass
        self.close()

    def _server_to_client(self):
        try:
            while True:
                data = self.server.recv(1 << 16)
                if not data:
                    break
                data, drop = self.proxy._pass_or_drop(len(data), data)
                if data:
                    with self.lock:
                        release = time.monotonic() + self.proxy.delay_seconds
                        heapq.heappush(self.queue, (release, next(self.sequence), data))
                        self.queued.notify()
                if drop:
                    # Let the sender forward what was allowed, then reset every connection.
                    self._wait_drained()
                    self.proxy._drop_all()
                    return
        except OSError:
            pass
        self._wait_drained()
        self.close()

    def _wait_drained(self):
        with self.lock:
            while self.queue and not self.closed:
                self.queued.wait(0.05)

    def _sender(self):
        while True:
            with self.lock:
                while not self.queue and not self.closed:
                    self.queued.wait()
                if self.closed:
                    return
                release, _, data = self.queue[0]
                left = release - time.monotonic()
                if left > 0:
                    self.queued.wait(left)  # a new packet never releases earlier than this one
                    continue
                heapq.heappop(self.queue)
                self.queued.notify_all()
            try:
                self.client.sendall(data)
                self.proxy._count("bytes_to_client", len(data))
            except OSError:
                self.close()
                return

    def close(self, abort=False):
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.queue.clear()
            self.queued.notify_all()
        for sock in (self.client, self.server):
            _abort(sock) if abort else _shutdown(sock)
            try:
                sock.close()
            except OSError:
                pass
        self.proxy._forget(self)


class FaultProxy:
    def __init__(self, target_port, target_host="127.0.0.1", host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.host = host
        self.port = None
        self.mode = PASS
        self.delay_seconds = 0.0
        self._drop_left = None
        self._lock = threading.Lock()
        self._connections = set()
        self._blackholed = []
        self._listener = None
        self._closing = False
        self._counters = {"connections": 0, "blackholed": 0,
                          "dropped": 0, "closed": 0, "bytes_to_server": 0, "bytes_to_client": 0,
                          "server_connect_failures": 0}
        self._accept_thread = None

    # -- control -------------------------------------------------------------------------------

    def start(self):
        self._listen()
        return self

    def passthrough(self):
        with self._lock:
            self.mode = PASS
            self.delay_seconds = 0.0
            self._drop_left = None
            blackholed, self._blackholed = self._blackholed, []
        for sock in blackholed:
            _shutdown(sock)
            sock.close()
        self._listen()

    def delay(self, milliseconds):
        with self._lock:
            self.delay_seconds = milliseconds / 1000.0

    def drop_after(self, nbytes):
        with self._lock:
            self._drop_left = nbytes

    def refuse(self):
        with self._lock:
            self.mode = REFUSE
            listener, self._listener = self._listener, None
        if listener is not None:
            _shutdown(listener)
            listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
            self._accept_thread = None

    def blackhole(self):
        self._listen()
        with self._lock:
            self.mode = BLACKHOLE

    def close_all(self):
        with self._lock:
            connections = list(self._connections)
            self._counters["closed"] += len(connections)
        for c in connections:
            c.close()

    def close(self):
        self._closing = True
        self.refuse()
        self.close_all()
        with self._lock:
            blackholed, self._blackholed = self._blackholed, []
        for sock in blackholed:
            sock.close()

    def stats(self):
        with self._lock:
            out = dict(self._counters)
            out["open"] = len(self._connections)
            return out

    # -- internals -----------------------------------------------------------------------------

    def _listen(self):
        with self._lock:
            if self._listener is not None or self._closing:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port or 0))
            listener.listen(64)
            listener.settimeout(0.2)
            self.port = listener.getsockname()[1]
            self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accept_thread.start()

    def _accept(self, listener):
        while True:
            with self._lock:
                if self._listener is not listener:
                    return
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self._take(client)
            except OSError:
                client.close()  # the client went away before it was accepted: nothing to do

    def _take(self, client):
        client.settimeout(None)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self.mode == BLACKHOLE:
                self._blackholed.append(client)
                self._counters["blackholed"] += 1
                return
        try:
            server = socket.create_connection(self.target, timeout=5)
            server.settimeout(None)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            self._count("server_connect_failures", 1)
            client.close()
            return
        connection = _Connection(self, client, server)
        with self._lock:
            self._connections.add(connection)
            self._counters["connections"] += 1
        connection.start()

    def _count(self, name, n):
        with self._lock:
            self._counters[name] += n

    def _pass_or_drop(self, n, data):
        """The part of `data` to forward, and whether every connection must be dropped after it."""
        with self._lock:
            if self._drop_left is None:
                return data, False
            if n < self._drop_left:
                self._drop_left -= n
                return data, False
            allowed = self._drop_left
            self._drop_left = None
            return data[:allowed], True

    def _drop_all(self):
        with self._lock:
            connections = list(self._connections)
            self._counters["dropped"] += len(connections)
        for c in connections:
            c.close(abort=True)

    def _forget(self, connection):
        with self._lock:
            self._connections.discard(connection)
