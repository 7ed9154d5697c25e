"""Hand-made (hostile) Nix binary caches for test_hostile.py: NARs, narinfos and `.ls` listings
written byte by byte, so that they can say what no Nix would write (entry names with '/', '..',
NUL; absurd sizes; a million entries; symlink loops)."""

import hashlib
import json
import os
import struct

from lazystore_testlib import NIX32


def u64(value):
    return struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF)


def nar_string(data):
    if isinstance(data, str):
        data = data.encode()
    return u64(len(data)) + data + b"\0" * ((8 - len(data) % 8) % 8)


def nar_strings(*items):
    return b"".join(nar_string(i) for i in items)


# Nodes of an archive: no validation, no sorting — exactly what the caller asks for.
def nar_file(contents=b"", executable=False, claimed_size=None):
    size = len(contents) if claimed_size is None else claimed_size
    head = nar_strings("(", "type", "regular") + (nar_strings("executable", "") if executable else b"")
    body = u64(size) + contents + b"\0" * ((8 - len(contents) % 8) % 8)
    return head + nar_string("contents") + body + nar_string(")")


def nar_symlink(target):
    return nar_strings("(", "type", "symlink", "target", target, ")")


def nar_directory(entries):
    """entries: [(name, node bytes)] in the given order."""
    out = [nar_strings("(", "type", "directory")]
    for name, node in entries:
        out.append(nar_strings("entry", "(", "name", name, "node"))
        out.append(node)
        out.append(nar_string(")"))
    out.append(nar_string(")"))
    return b"".join(out)


def nar(root_node):
    return nar_string("nix-archive-1") + root_node


class HostileCache:
    """A binary cache directory: nix-cache-info, then one store path per add()."""

    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "nar"), exist_ok=True)
        with open(os.path.join(root, "nix-cache-info"), "w") as f:
            f.write("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n")
        self.counter = 0

    def next_hash(self):
        # Distinct, valid and deterministic hash parts.
        self.counter += 1
        n, digits = self.counter, []
        for _ in range(32):
            digits.append(NIX32[n % 32])
            n //= 32
        return "".join(reversed(digits))

    def add(self, name, nar_bytes=None, listing=None, nar_size=None, narinfo_extra=""):
        """Writes <hash>.narinfo (unsigned), nar/<hash>.nar and <hash>.ls (a dict is dumped as
        JSON, bytes/str written as is). Returns the store path's base name."""
        h = self.next_hash()
        base = f"{h}-{name}"
        if nar_bytes is not None:
            with open(os.path.join(self.root, "nar", h + ".nar"), "wb") as f:
                f.write(nar_bytes)
        if listing is not None:
            if isinstance(listing, dict):
                listing = json.dumps(listing, separators=(",", ":"))
            if isinstance(listing, str):
                listing = listing.encode()
            with open(os.path.join(self.root, h + ".ls"), "wb") as f:
                f.write(listing)
        digest = hashlib.sha256(nar_bytes or b"").hexdigest()
        size = nar_size if nar_size is not None else len(nar_bytes or b"x")
        with open(os.path.join(self.root, h + ".narinfo"), "w") as f:
            f.write(f"StorePath: /nix/store/{base}\nURL: nar/{h}.nar\nCompression: none\n"
                    f"NarHash: sha256:{digest}\nNarSize: {size}\nReferences: \n{narinfo_extra}")
        return base


def listing_file(size, nar_offset, executable=False):
    entry = {"type": "regular", "size": size, "narOffset": nar_offset}
    if executable:
        entry["executable"] = True
    return entry


def listing(root_entry):
    return {"version": 1, "root": root_entry}


def file_offsets(nar_bytes, contents_list):
    """The offset of each contents in the archive (for listings that must be right)."""
    offsets, start = [], 0
    for contents in contents_list:
        at = nar_bytes.index(u64(len(contents)) + contents, start) + 8
        offsets.append(at)
        start = at
    return offsets
