"""A round trip for the benchmarks: delay_line.c (compiled once into a work directory) between a
client and a server on 127.0.0.1, each direction held for half the round trip. This machine's
kernel has no netem; a delay line per server and round trip gives every system the same wire.

    line = DelayLine(binary, server_port, rtt_ms=0.5)   # line.port: where clients connect
    line.cpu_seconds()                                   # the proxy's own CPU time so far
    line.close()
"""

import os
import subprocess

import lazystore_testlib as lib

HERE = os.path.dirname(os.path.abspath(__file__))


def compile_delay_line(directory):
    binary = os.path.join(directory, "delay_line")
    lib.run(["cc", "-O2", "-o", binary, os.path.join(HERE, "delay_line.c")])
    return binary


def process_cpu_seconds(pid):
    """utime + stime of a process and its reaped children (/proc/PID/stat), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class DelayLine:
    def __init__(self, binary, target_port, rtt_ms):
        self.rtt_ms = rtt_ms
        self.target_port = target_port
        self.process = subprocess.Popen([binary, str(target_port), str(int(round(rtt_ms * 1000 / 2)))],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"delay_line for port {target_port} exited {self.process.wait()}")
        self.port = int(line)

    def cpu_seconds(self):
        return process_cpu_seconds(self.process.pid)

    def close(self):
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process.stdout.close()
        self.process = None


class DelayLines:
    """One delay line per (server port, round trip), made on first use, all closed together."""

    def __init__(self, binary):
        self.binary = binary
        self.lines = {}

    def port(self, target_port, rtt_ms):
        """Where to connect to reach target_port at rtt_ms; rtt None or 0: the server itself."""
        if not rtt_ms:
            return target_port
        key = (target_port, rtt_ms)
        if key not in self.lines:
            self.lines[key] = DelayLine(self.binary, target_port, rtt_ms)
        return self.lines[key].port

    def cpu_seconds(self):
        return sum(line.cpu_seconds() for line in self.lines.values())

    def close(self):
        for line in self.lines.values():
            line.close()
        self.lines.clear()
