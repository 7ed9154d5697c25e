#!/usr/bin/python3
"""Copies stdin to stdout at about RATE bytes/s (argv[1]): slows a local nix-store --serve so a
test can interrupt a push in the middle of a NAR. Sleeping here paces data; it synchronises nothing."""
import os
import sys
import time

rate = float(sys.argv[1])
start = time.monotonic()
sent = 0
while True:
    data = os.read(0, 65536)
    if not data:
        break
    os.write(1, data)
    sent += len(data)
    ahead = sent / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
