#!/usr/bin/python3
"""meson test 'lab conformance': lazystore against the kernel NFS server, in one boot of the lab
guest (tests/lab/README.md). Runs guest_conformance.py there with the build's lazystore and
prints every check; fails when a check fails or is missing, or the guest does not run it.

Environment: LAZYSTORE_BIN, LAZYSTORE_CTL_BIN (the build's), LAB_STORE_DIR (where the lab store
and its image are kept; default /var/tmp/lazystore-lab-store), LAB_TIMEOUT (seconds the checks
may take in the guest, default 900), LAB_CHECKS (space-separated check names: a subset).
Without root, qemu, the kernel or the NFS tools it skips (exit 77); with CI=true that is a failure.
"""

import json
import os
import shutil
import signal
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
import lab  # noqa: E402
import lab_store  # noqa: E402
from lazystore_testlib import log, skip  # noqa: E402

# Every check guest_conformance.py must report (a missing one is a failure too).
EXPECTED = ["ServerChecks.test_export_line", "NFSv4Root.test_explicit_fsid0_root",
            "Kernel61.test_walk_without_per_entry_lookups"] + [
    f"{version}.test_{check}" for version in ("NFSv3", "NFSv4") for check in (
        "content", "new_path_appears", "locked_path_hidden", "server_stopped_and_restarted",
        "root_squash", "unprivileged_source_port", "kill9_during_cold_read")]


def interrupted(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through Guest.run, which stops qemu


def main():
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    missing = lab.missing_prerequisites()
    binary = os.environ.get("LAZYSTORE_BIN", "")
    if not binary or not os.access(binary, os.X_OK):
        missing.append(f"LAZYSTORE_BIN={binary!r} is not an executable")
    if shutil.which("nix-store") is None:
        missing.append("no nix-store (Debian package nix-bin)")
    if missing:
        skip("; ".join(missing))
    image, paths = lab_store.store(os.environ.get("LAB_STORE_DIR", "/var/tmp/lazystore-lab-store"))
    log(f"lab store: {', '.join(f'{k}={v}' for k, v in sorted(paths.items()))}")
    checks = os.environ.get("LAB_CHECKS", "").split()
    timeout = int(os.environ.get("LAB_TIMEOUT", "900"))
    work = tempfile.mkdtemp(prefix="lazystore-lab-test-")
    try:
        guest = lab.Guest(work, image, lazystore=binary, lazystore_ctl=os.environ.get("LAZYSTORE_CTL_BIN"),
                          preload=lab.PYTHON_PRELOAD + ["/usr/bin/setpriv"], timeout=timeout,
                          echo=sys.stdout)
        result = guest.run(["/usr/bin/python3", os.path.join(HERE, "guest_conformance.py"), *checks])
        log(f"guest: {result.seconds:.0f} s in all, the checks started {result.boot_seconds or 0:.0f} s after "
            f"qemu ({guest.accel}); host load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        if result.timed_out or result.status is None:
            log("FAIL: the guest did not finish the checks" + (" (timed out)" if result.timed_out else "")
                + "; console:\n" + result.console_tail(60))
            return 1
        try:
            with open(os.path.join(result.out, "checks.json")) as f:
                reported = json.load(f)["checks"]
        except (OSError, ValueError) as e:
            log(f"FAIL: no checks.json from the guest ({e}); the command exited {result.status}")
            return 1
        print("\n== lab conformance against the kernel NFS server (Debian 6.1, in the guest) ==")
        for check in reported:
            detail = [line for line in check["detail"].strip().splitlines() if line.strip()]
            print(f"{check['status']:5} {check['name']} ({check['seconds']:.1f} s)"
                  + (f": {detail[-1].strip()[:400]}" if detail else ""))
        names = {c["name"] for c in reported}
        absent = [n for n in (EXPECTED if not checks else []) if n not in names]
        for name in absent:
            print(f"FAIL  {name}: not reported by the guest")
        failed = [c["name"] for c in reported if c["status"] != "PASS"] + absent
        print(f"{len(reported) - len(failed) + len(absent)} of {len(reported) + len(absent)} checks passed"
              + (f"; failed: {', '.join(failed)}" if failed else ""))
        return 1 if failed or result.status != 0 else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
