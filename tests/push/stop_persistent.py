"""Ends every lazystore-push persistent connection whose socket is under DIR (a test's own
directory): the exit request its clients send, with our stdout/stderr passed along as they do.
Usage: stop_persistent.py DIR"""

import os
import socket
import struct
import sys


def stop(path):
    payload = struct.pack("<Q", 2)  # kRequestExit
    message = struct.pack("<Q", len(payload)) + payload
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        try:
            s.connect(path)
        except OSError:
            return False
        socket.send_fds(s, [message[:1]], [1, 2])
        s.sendall(message[1:])
        s.recv(8)
        return True


for root, _dirs, files in os.walk(sys.argv[1]):
    for name in files:
        if name.endswith(".sock"):
            stop(os.path.join(root, name))
