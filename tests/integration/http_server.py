"""A real HTTP server for the tests: nginx serving a Nix binary cache directory on 127.0.0.1
(and `SilentServer`, a port that accepts connections and never answers).

nginx serves Range requests (`python3 -m http.server` does not). Every file lives under the
server's own work directory (config, pid, logs, temp paths); `daemon off;` keeps it our child, so
it is stopped by its pid. The access log records `$body_bytes_sent` per request, so a test can
count the bytes served.
"""

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

START_DEADLINE = 20.0


# Their home is lazystore_testlib; tests import free_port from here too.
from lazystore_testlib import free_port, port_open as _port_open  # noqa: E402,F401


class Nginx:
    """`tls=(cert, key)` serves https; `extra` goes into the server block before `location /`
    (e.g. a redirect)."""

    def __init__(self, root, work, port=None, tls=None, extra=""):
        self.root = root
        self.work = work
        self.port = port or free_port()
        self.tls = tls
        self.process = None
        self._markers = 0  # log markers asked for (requests())
        os.makedirs(work, exist_ok=True)
        for sub in ("client", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
            os.makedirs(os.path.join(work, sub), exist_ok=True)
        self.access_log = os.path.join(work, "logs", "access.log")
        self.error_log = os.path.join(work, "logs", "error.log")
        self.config = os.path.join(work, "nginx.conf")
        with open(self.config, "w") as f:
            f.write(f"""
user root;
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {self.error_log} warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {work}/client;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  log_format bytes '$request_method $uri $status $body_bytes_sent "$http_range"';
  default_type application/octet-stream;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{self.port}{" ssl" if tls else ""};
    {f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};" if tls else ""}
    root {root};
    access_log {self.access_log} bytes;
    {extra}
    location / {{ }}
  }}
}}
""")

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self):
        assert self.process is None
        err = open(os.path.join(self.work, "logs", "stderr"), "ab")
        self.process = subprocess.Popen(["nginx", "-c", self.config, "-p", self.work + "/"],
                                        stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        err.close()
        deadline = time.monotonic() + START_DEADLINE
        while not _port_open(self.port):
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"nginx exited {code}:\n{self.errors()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx not listening after {START_DEADLINE} s:\n{self.errors()}")
            time.sleep(0.02)  # polling interval, bounded by the deadline
        return self

    def stop(self):
        """SIGKILL the master by its pid (the worker exits with it); the port is then closed."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
        self._wait_port_closed("stop")

    def kill(self):
        """Sudden death: SIGKILL to the master; the worker notices and exits too."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None
        self._wait_port_closed("kill")

    def _wait_port_closed(self, after):
        deadline = time.monotonic() + START_DEADLINE
        while _port_open(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx port {self.port} still open after {after}")
            time.sleep(0.02)

    def errors(self):
        out = ""
        for path in (self.error_log, os.path.join(self.work, "logs", "stderr")):
            try:
                with open(path, errors="replace") as f:
                    out += f.read()
            except OSError:
                pass
        return out

    def requests(self):
        """[(method, uri, status, body bytes, range)] served so far. nginx logs a request once it
        has sent the last byte, and a client may already have that byte, so a test can look
        before the line is there. A marker request of our own comes first: once its line is in
        the log, nginx (one process, `master_process off`) has logged every request it served
        before it. The markers are left out."""
        marker = self._ask_marker()
        deadline = time.monotonic() + START_DEADLINE
        while True:
            out = self._logged()
            if marker is None or any(r[1] == marker for r in out):
                return [r for r in out if not r[1].startswith(self.MARKER)]
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not log {marker} within {START_DEADLINE} s")
            time.sleep(0.01)  # polling interval, bounded by the deadline

    MARKER = "/.lazystore-test-log-marker-"

    def _ask_marker(self):
        """GETs a new marker URI (a 404); its URI, or None when nginx does not answer (stopped,
        killed): then nothing is on its way to the log."""
        if self.process is None:
            return None
        self._markers += 1
        marker = f"{self.MARKER}{self._markers}"
        handlers = [urllib.request.ProxyHandler({})]  # straight to nginx, whatever the environment
        if self.tls:  # our own test certificate
            handlers.append(urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))
        try:
            urllib.request.build_opener(*handlers).open(self.url + marker, timeout=5).close()
        except urllib.error.HTTPError:
            pass  # the 404: answered, so it is logged
        except OSError:
            return None
        return marker

    def _logged(self):
        out = []
        try:
            with open(self.access_log) as f:
                for line in f:
                    parts = line.split(" ", 4)
                    if len(parts) == 5:
                        out.append((parts[0], parts[1], int(parts[2]), int(parts[3]),
                                    parts[4].strip().strip('"')))
        except OSError:
            pass
        return out

    def bytes_served(self, suffix=None):
        return sum(r[3] for r in self.requests() if suffix is None or r[1].endswith(suffix))

    def close(self):
        self.stop()


def self_signed_certificate(work):
    """A certificate for 127.0.0.1 (and its key) made with openssl; also the CA file to trust."""
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class DripServer:
    """A small HTTP server (a thread in the test process) that serves a binary cache directory,
    but sends the bodies of files whose path contains `drip` one `chunk` every `interval` seconds:
    a server that answers, slowly, for ever. Counts what it sent."""

    def __init__(self, root, drip="/nar/", chunk=1, interval=0.2):
        import http.server
        import threading
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = os.path.join(root, self.path.lstrip("/").split("?")[0])
                if ".." in self.path or not os.path.isfile(path):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with open(path, "rb") as f:
                    data = f.read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if drip not in self.path:
                    self.wfile.write(data)
                    return
                server.dripping += 1
                try:
                    for i in range(0, len(data), chunk):
                        if server.stopping.wait(interval):
                            return
                        self.wfile.write(data[i:i + chunk])
                        self.wfile.flush()
                        server.dripped += len(data[i:i + chunk])
                except OSError:
                    server.aborted += 1  # the client gave up

        self.stopping = threading.Event()
        self.dripping = self.dripped = self.aborted = 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


class SilentServer:
    """A TCP port on 127.0.0.1 that accepts connections (the kernel's backlog) and never answers:
    an HTTP server that hangs."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.port = self.socket.getsockname()[1]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def close(self):
        self.socket.close()
