"""A fault-injecting TCP proxy for the tests: listens on 127.0.0.1, forwards every connection to a
real server (nfs-ganesha's NFSv4 port), and changes what it does at run time:

- `passthrough()`: forward both ways, accept new connections (the default);
- `delay(ms)`: hold every server→client packet for ms milliseconds before forwarding it (latency,
  not a bandwidth limit: packets stay pipelined and in order); `delay(0)` ends it;
- `drop_after(n)`: after n more server→client bytes (counted over all connections), reset every
  connection: a reply is cut in the middle (one shot; later connections pass again);
- `refuse()`: stop listening: new connections are refused by the kernel (RST);
- `blackhole()`: accept new connections and never answer nor connect them to the server;
- `close_all()`: close every open connection (both sides), like a server going away;
- `hold_next_read()`: the next NFSv4 READ call (a COMPOUND with a READ op) a client sends is kept
  from the server, so the client waits for its reply; `wait_for_held_read(timeout)` observes that
  it was sent (the client is then waiting), `release_held()` forwards it. A held call dies with
  its connection.

Counters (`stats()`) say how many connections were made, refused, blackholed and dropped, how
many bytes went each way and how many READ calls were held, so a test can prove its fault was
really injected.

Runs in threads of the test process; `close()` stops everything. Only 127.0.0.0/8 is used.
"""

import heapq
import itertools
import socket
import struct
import threading
import time

PASS, REFUSE, BLACKHOLE = "pass", "refuse", "blackhole"

NFS_PROGRAM, NFS_V4, COMPOUND = 100003, 4, 1
OP_GETATTR, OP_GETFH, OP_LOOKUP, OP_PUTFH, OP_PUTPUBFH, OP_PUTROOTFH, OP_READ, OP_SEQUENCE = \
    9, 10, 15, 22, 23, 24, 25, 53


def _padded(n):
    return (n + 3) & ~3


def is_nfs4_read_call(body):
    """Whether an RPC message (one record fragment, without its marker) is an NFSv4 COMPOUND call
    with a READ op. Knows the ops lazystore puts before a READ; anything else is not a READ."""
    try:
        _, kind, _, program, version, procedure = struct.unpack_from(">6I", body, 0)
        if kind != 0 or program != NFS_PROGRAM or version != NFS_V4 or procedure != COMPOUND:
            return False
        at = 24
        for _ in range(2):  # credential, verifier
            _, length = struct.unpack_from(">2I", body, at)
            at += 8 + _padded(length)
        (tag,) = struct.unpack_from(">I", body, at)
        at += 4 + _padded(tag) + 4  # the tag, the minor version
        (count,) = struct.unpack_from(">I", body, at)
        at += 4
        for _ in range(count):
            (op,) = struct.unpack_from(">I", body, at)
            at += 4
            if op == OP_READ:
                return True
            if op in (OP_PUTFH, OP_LOOKUP):  # a file handle, a name: opaque<>
                (length,) = struct.unpack_from(">I", body, at)
                at += 4 + _padded(length)
            elif op == OP_GETATTR:  # a bitmap
                (words,) = struct.unpack_from(">I", body, at)
                at += 4 + 4 * words
            elif op == OP_SEQUENCE:
                at += 32
            elif op not in (OP_GETFH, OP_PUTPUBFH, OP_PUTROOTFH):
                return False
    except struct.error:
        return False
    return False


class _CallFramer:
    """Follows the RPC record marking (RFC 5531) of a client→server stream, so that one call can
    be held back whole; every other byte passes unchanged and at once."""

    def __init__(self, proxy):
        self.proxy = proxy
        self.pending = b""     # bytes not yet passed or held
        self.left = 0          # bytes of the current fragment (marker included) still to go
        self.holding = False   # the current message is held
        self.in_message = False  # the next fragment continues a message

    def feed(self, data):
        """Returns (bytes to forward, bytes to hold)."""
        self.pending += data
        forward, held = [], []
        while self.pending:
            if self.left:
                part, self.pending = self.pending[:self.left], self.pending[self.left:]
                self.left -= len(part)
                (held if self.holding else forward).append(part)
                continue
            if len(self.pending) < 4:
                break
            (marker,) = struct.unpack_from(">I", self.pending, 0)
            last, length = bool(marker & 0x80000000), marker & 0x7fffffff
            if not self.in_message:
                self.holding = False
                if self.proxy._read_hold_armed():
                    if len(self.pending) < 4 + length:
                        break  # the whole call first, to see whether it is a READ
                    self.holding = is_nfs4_read_call(self.pending[4:4 + length]) and \
                        self.proxy._claim_read_hold()
            self.in_message = not last
            self.left = 4 + length
        return b"".join(forward), b"".join(held)


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
        framer = _CallFramer(self.proxy)
        try:
            while True:
                data = self.client.recv(1 << 16)
                if not data:
                    break
                self.proxy._count("bytes_to_server", len(data))
                data, held = framer.feed(data)
                if held:
                    self.proxy._keep_held(self, held)
                if data:
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
                          "server_connect_failures": 0, "held_reads": 0}
        self._hold_read = False
        self._held = []  # (connection, bytes) kept from the server
        self._held_read = threading.Event()
        self._accept_thread = None

    # -- control -------------------------------------------------------------------------------

    def start(self):
        self._listen()
        return self

    def passthrough(self):
        self.release_held()
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

    def hold_next_read(self):
        with self._lock:
            self._hold_read = True
            self._held_read.clear()

    def wait_for_held_read(self, timeout):
        """True once a READ call is held (its client waits for the reply), False at the deadline."""
        return self._held_read.wait(timeout)

    def release_held(self):
        with self._lock:
            self._hold_read = False
            held, self._held = self._held, []
        for connection, data in held:
            try:
                connection.server.sendall(data)
            except OSError:
                pass  # the connection went away meanwhile

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

    def _read_hold_armed(self):
        with self._lock:
            return self._hold_read

    def _claim_read_hold(self):
        with self._lock:
            claimed, self._hold_read = self._hold_read, False
            if claimed:
                self._counters["held_reads"] += 1
            return claimed

    def _keep_held(self, connection, data):
        with self._lock:
            self._held.append((connection, data))
        self._held_read.set()

    def _forget(self, connection):
        with self._lock:
            self._connections.discard(connection)
            self._held = [(c, data) for c, data in self._held if c is not connection]
