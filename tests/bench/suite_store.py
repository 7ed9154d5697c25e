"""The benchmark suite's store: the integration fixture's /usr/include store path plus two store
paths of its own (made once, cached under --store-cache, default /var/tmp/lazystore-bench-store):

- `python3.11-home`: a Python prefix (`lib/python3.11`, Debian's stdlib without site/dist-packages
  and tests) whose bytecode is in the store, as Nix ships it. Debian's timestamp-checked .pyc
  headers are rewritten to "unchecked hash-based" (PEP 552) because `nix-store --add` resets
  every mtime to 1, which would otherwise make Python recompile every module in memory.
- `lazystore-bench-large`: two incompressible files, 256 MiB and 128 MiB.
"""

import fcntl
import os
import random
import shutil
import struct
import time

import lazystore_testlib as lib

STORE_VERSION = 1
MiB = lib.MiB
LARGE_FILES = {"lib/libbig.so": 256 * MiB, "share/data-128m.bin": 128 * MiB}


def _python_home(stage):
    top = os.path.join(stage, "python3.11-home")
    lib_dir = os.path.join(top, "lib", "python3.11")
    os.makedirs(os.path.dirname(lib_dir))
    shutil.copytree("/usr/lib/python3.11", lib_dir, symlinks=True,
                    ignore=shutil.ignore_patterns("site-packages", "dist-packages", "test", "tests",
                                                  "idlelib", "turtledemo"))
    rewritten = 0
    for dirpath, _dirs, names in os.walk(lib_dir):
        for name in names:
            if not name.endswith(".pyc"):
                continue
            path = os.path.join(dirpath, name)
            with open(path, "r+b") as f:
                header = f.read(16)
                if len(header) == 16 and struct.unpack("<I", header[4:8])[0] == 0:
                    f.seek(4)
                    f.write(struct.pack("<I", 1) + bytes(8))  # hash-based, check_source=0
                    rewritten += 1
    return top, rewritten


def _large(stage):
    top = os.path.join(stage, "lazystore-bench-large")
    for rel, size in LARGE_FILES.items():
        path = os.path.join(top, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rng = random.Random(rel)
        with open(path, "wb") as f:
            for _ in range(size // (16 * MiB)):
                f.write(rng.randbytes(16 * MiB))
    return top


def bench_store(cache_root):
    """{'python_home': abs path, 'large': abs path}, built once (file lock, marker written last)."""
    os.makedirs(os.path.dirname(os.path.abspath(cache_root)), exist_ok=True)
    marker = os.path.join(cache_root, "complete")
    store = os.path.join(cache_root, "root", "nix", "store")
    with open(cache_root + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(marker):
            with open(marker) as f:
                fields = f.read().split()
            if fields and fields[0] == str(STORE_VERSION) and all(
                    os.path.isdir(os.path.join(store, n)) for n in fields[1:]):
                return {"python_home": os.path.join(store, fields[1]), "large": os.path.join(store, fields[2])}
        started = time.monotonic()
        shutil.rmtree(cache_root, ignore_errors=True)
        stage = os.path.join(cache_root, "stage")
        os.makedirs(stage)
        nix = lib.NixStore(os.path.join(cache_root, "root"), os.path.join(cache_root, "nix-home"))
        home, rewritten = _python_home(stage)
        home_name = nix.add(home)
        large_name = nix.add(_large(stage))
        shutil.rmtree(stage)
        with open(marker, "w") as f:
            f.write(f"{STORE_VERSION} {home_name} {large_name}\n")
        lib.log(f"bench store built in {time.monotonic() - started:.1f} s ({rewritten} .pyc made unchecked)")
        return {"python_home": os.path.join(store, home_name), "large": os.path.join(store, large_name)}
