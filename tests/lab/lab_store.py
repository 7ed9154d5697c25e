"""The conformance run's store: small, realistic store paths made with Debian's nix-store
(`nix-store --store local?root=… --add`), and their ext4 image for the guest's store disk.

Store paths (roles): `misc` (lazystore_testlib.make_misc_tree with an 8 MiB big.bin: files at and
around the 1 MiB chunk size, zero runs, empty files, executables, every kind of symlink, odd
names, a deep and empty directories), `headers` (/usr/include/x86_64-linux-gnu: hundreds of
small files in nested directories), `single_file`, `executable_file` and `symlink` store paths.
Built once per directory (file lock, completion marker last); the image beside it.
The image holds `lab-manifest.json` (roles → names) at its root, outside nix/store.
"""

import fcntl
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import lazystore_testlib as lib  # noqa: E402
import lab  # noqa: E402

STORE_VERSION = 1
MANIFEST = "lab-manifest.json"
BIG_SIZE = 8 * lib.MiB


def _build(root):
    shutil.rmtree(root, ignore_errors=True)
    stage = os.path.join(root, "stage")
    os.makedirs(stage)
    nix = lib.NixStore(os.path.join(root, "root"), os.path.join(root, "nix-home"))
    paths = {}
    misc = os.path.join(stage, "lazystore-lab-misc")
    lib.make_misc_tree(misc, big_size=BIG_SIZE)
    paths["misc"] = nix.add(misc)
    paths["headers"] = nix.add("/usr/include/x86_64-linux-gnu")
    single = os.path.join(stage, "hello.txt")
    with open(single, "wb") as f:
        f.write(b"a single-file store path\n")
    paths["single_file"] = nix.add(single)
    script = os.path.join(stage, "run-me.sh")
    with open(script, "wb") as f:
        f.write(b"#!/bin/sh\nexit 0\n")
    os.chmod(script, 0o755)
    paths["executable_file"] = nix.add(script)
    link = os.path.join(stage, "link-to-headers")
    os.symlink(f"/nix/store/{paths['headers']}/sys/types.h", link)
    paths["symlink"] = nix.add(link)
    shutil.rmtree(stage)
    with open(os.path.join(root, "root", MANIFEST), "w") as f:
        json.dump({"version": STORE_VERSION, "paths": paths}, f, indent=1)


def store(directory):
    """(image path, {role: store path name}); made on first use, kept in `directory`."""
    os.makedirs(os.path.dirname(os.path.abspath(directory)), exist_ok=True)
    marker = os.path.join(directory, "complete")
    image = os.path.join(directory, "store.img")
    with open(directory.rstrip("/") + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(marker) as f:
                complete = f.read().strip() == str(STORE_VERSION)
        except OSError:
            complete = False
        if not complete or not os.path.exists(image):
            started = time.monotonic()
            _build(directory)
            lab.build_store_image(os.path.join(directory, "root"), image)
            with open(marker, "w") as f:
                f.write(f"{STORE_VERSION}\n")
            lib.log(f"lab store and image built in {time.monotonic() - started:.1f} s at {directory}")
        with open(os.path.join(directory, "root", MANIFEST)) as f:
            return image, json.load(f)["paths"]
