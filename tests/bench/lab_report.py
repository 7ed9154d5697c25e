"""Markdown and chart of the lab benchmark (lab-results.json → lab-results.md, lab-results.png).

    /usr/bin/python3 tests/bench/lab_report.py lab-results.json OUTDIR    # redo them from the JSON
"""

import statistics
import time

from suite_report import _fmt_b, _fmt_s

STATES = ("cold", "disk-warm", "hot")
PEER = "knfs3"  # the kernel client with the seed's options: what every ratio is taken against
OURS = ("lazy3", "lazy4")


def _median(values):
    return statistics.median(values) if values else None


def medians(results):
    """{(rtt, workload, system, state): median seconds or None}."""
    out = {}
    for name, cell in results["cells"].items():
        rtt, key, system = name.split("|")
        for state in STATES:
            out[float(rtt), key, system, state] = None if cell["problem"] else _median(cell[state])
    return out


def _ratio(a, b):
    return a / b if a is not None and b else None


def _targets(add, results, med):
    """Item 5 of the lab issue: at 0.5 ms RTT (or the largest measured), ratios inside the guest."""
    rtt = 0.5 if 0.5 in results["rtts"] else max(results["rtts"])
    keys = results["workloads"]
    names = dict(results["systems"])
    ours = [s for s in OURS if s in names]
    add(f"## Targets (RTT {rtt:g} ms; speed-up = kernel NFSv3 time ÷ lazystore time, higher is better)\n")
    add("| target | workload | " + " | ".join(names.get(s, s) for s in ours) + " | met |")
    add("|---|---|" + "---:|" * len(ours) + "---|")
    rows = [("cold ≥ 1.5× faster than the kernel client's cold", "cold", "cold", 1.5,
             [k for k in keys if k in ("W1", "W2", "W3")]),
            ("disk-warm ≥ 5× faster than the kernel client's cold", "disk-warm", "cold", 5.0, keys),
            ("hot ≥ 5× faster than the kernel client's hot", "hot", "hot", 5.0, keys),
            ("W4 seq cold ≥ 0.8× the kernel client's throughput", "cold", "cold", 0.8,
             [k for k in keys if k == "W4 seq"])]
    for label, ours_state, peer_state, limit, row_keys in rows:
        for key in row_keys:
            peer = med.get((rtt, key, PEER, peer_state))
            cells, met = [], []
            for system in ours:
                speedup = _ratio(peer, med.get((rtt, key, system, ours_state)))
                cells.append("–" if speedup is None else f"{speedup:.2f}×")
                met.append(speedup is not None and speedup >= limit)
            verdict = "yes" if all(met) else ("**no**" if not any(met) else
                                              "**no** (" + ", ".join(names[s] for s, m in zip(ours, met) if not m) + ")")
            add(f"| {label} | {key} | " + " | ".join(cells) + f" | {verdict} |")
    equal = results.get("bytes", {})
    if equal:
        bad = {s: p for s, p in equal.items() if p}
        add("| every byte equal | all store paths, after the runs | " + " | ".join(
            "equal" if not equal.get(s) else f"{len(equal[s])} differ" for s in ours)
            + f" | {'yes' if not bad else '**no** (' + ', '.join(names.get(s, s) for s in bad) + ')'} |")
    add("")


def markdown(results):
    med = medians(results)
    names = dict(results["systems"])
    systems = [s for s, _ in results["systems"]]
    keys = results["workloads"]
    lines = []
    add = lines.append
    add("# lazystore against the kernel NFS client — the lab (Debian 6.1 guest)\n")
    options = "; ".join(f"{names.get(s, s)}: `{','.join(o)}`" for s, o in results.get("mount_options", {}).items())
    add(f"Run {results.get('date') or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: one boot of the lab "
        f"guest (kernel {results.get('guest_kernel', '?')}, {results.get('guest_cpus', '?')} vCPUs, "
        f"{results.get('accel', '?')}) on a {results.get('host_cpus', '?')}-CPU host shared with other work; "
        f"host load average (1/5/15 min) at start {results['load_start']}, at end {results['load_end']}; "
        f"whole run {results['seconds']} s (guest boot {results.get('boot_seconds', '?')} s). The kernel NFS "
        "server exports an ext4 disk with the seed's options (`ro,sync,no_subtree_check`, for 127.0.0.1); "
        "every system reads the same store paths from it. Medians of "
        f"{results['runs']} cold and {results['runs']} disk-warm runs and {results['hot_runs']} hot runs "
        f"({'`hyperfine -N`' if results['hot_runs'] > 1 else 'one timed and checked run'}). Cold: fresh mount (lazystore: empty cache), `echo 3 > /proc/sys/vm/drop_caches` "
        "(server and client caches alike: one kernel); disk-warm: lazystore restarted on its cache, the "
        "kernel client unmounted and mounted again (it keeps nothing), drop_caches; hot: right after. "
        f"Daemon `{results.get('bin', '?')}` built {results.get('bin_mtime', '?')}. Kernel client, as "
        f"mounted: {options or '?'}. The guest CPU is emulated: compare systems within this run only.\n")
    if results.get("partial"):
        add(f"**Cut short** (the guest's timeout): {len(results['cells'])} of "
            f"{len(results['rtts']) * len(keys) * len(systems)} cells measured"
            f"{'' if results.get('bytes') else ', bytes not compared'}; \"–\" = not measured.\n")
    add("Workloads:\n")
    for key in keys:
        add(f"- **{key}**: {results['describe'][key]}")
    add("")
    notes = {}

    def note(text):
        if text not in notes:
            notes[text] = len(notes) + 1
        return f"n/a [{notes[text]}]"

    for rtt in results["rtts"]:
        add(f"## RTT {rtt:g} ms (netem on the guest's loopback)\n")
        add("Seconds (time ÷ native; time ÷ kernel NFSv3, lower is better).\n")
        add("| workload | state | " + " | ".join(names[s] for s in systems) + " |")
        add("|---|---|" + "---:|" * len(systems))
        for key in keys:
            for state in STATES:
                row = [key, state]
                native, peer = med.get((rtt, key, "native", state)), med.get((rtt, key, PEER, state))
                for system in systems:
                    cell = results["cells"].get(f"{rtt:g}|{key}|{system}")
                    if cell is None:
                        row.append("–")
                        continue
                    if cell["problem"]:
                        row.append(note(cell["problem"]))
                        continue
                    value = med[rtt, key, system, state]
                    text = _fmt_s(value)
                    extra = []
                    if system != "native" and native:
                        extra.append(f"{value / native:.2f}×")
                    if system not in ("native", PEER) and peer:
                        extra.append(f"{value / peer:.2f}× k3")
                    row.append(text + (f" ({'; '.join(extra)})" if extra else ""))
                add("| " + " | ".join(row) + " |")
        add("")
    for text, number in notes.items():
        add(f"[{number}] {text}\n")

    _targets(add, results, med)

    add("## W5: bytes the server sent, W2 and W3 cold\n")
    add("TCP payload bytes nfsd sent on the established connections of port 2049 during the cold run "
        "(`ss -ti` `bytes_sent`, after minus before; RPC framing included); \"read\" = the total size of the "
        "distinct store files the workload opens (strace of a native run on the host).\n")
    add("| RTT | workload | files opened | bytes read | " + " | ".join(names[s] for s in systems if s != "native") + " |")
    add("|---|---|---:|---:|" + "---:|" * (len(systems) - 1))
    for rtt in results["rtts"]:
        for key in ("W2", "W3"):
            w5 = results.get("w5", {}).get(key)
            if not w5 or key not in keys:
                continue
            cells = []
            for system in systems:
                if system == "native":
                    continue
                cell = results["cells"].get(f"{rtt:g}|{key}|{system}")
                sent = _median(cell["server_bytes"]) if cell and not cell["problem"] else None
                cells.append("–" if sent is None else f"{_fmt_b(sent)} ({sent / w5['read_bytes']:.2f}×)")
            add(f"| {rtt:g} ms | {key} | {w5['files']} | {_fmt_b(w5['read_bytes'])} | " + " | ".join(cells) + " |")
    add("")
    fields = ("upstream_requests", "upstream_bytes", "chunk_misses", "chunk_hits", "metadata_misses", "lookups")
    add("## lazystore counters, first cold and disk-warm run\n")
    add("Deltas of `user.lazystore.stats` over the timed command; CPU = user + system time of the serving "
        "process during it (median), beside the command's wall time.\n")
    add("| RTT | workload | system | state | wall | CPU | " + " | ".join(fields) + " |")
    add("|---|---|---|---|---:|---:|" + "---:|" * len(fields))
    for rtt in results["rtts"]:
        for key in keys:
            for system in [s for s in OURS if s in names]:
                cell = results["cells"].get(f"{rtt:g}|{key}|{system}")
                for state in ("cold", "disk-warm"):
                    c = (cell or {}).get("counters", {}).get(state)
                    if c is not None:
                        cpu = _median(cell.get("cpu", {}).get(state, []))
                        add(f"| {rtt:g} | {key} | {names[system]} | {state} | {_fmt_s(_median(cell[state]))} | "
                            f"{_fmt_s(cpu) if cpu is not None else '–'} | "
                            + " | ".join(str(c.get(f, 0)) for f in fields) + " |")
    add("")
    if results.get("lazystore_problems"):
        add("lazystore daemon problems seen: " + "; ".join(results["lazystore_problems"][:5]) + "\n")
    return "\n".join(lines)


def chart(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    med = medians(results)
    keys = results["workloads"]
    names = dict(results["systems"])
    shown = [s for s, _ in results["systems"] if s != PEER]
    colors = {"native": "#7f7f7f", "knfs4": "#ff7f0e", "lazy3": "#1f77b4", "lazy4": "#17becf"}
    rtts = results["rtts"]
    fig, axes = plt.subplots(len(rtts), 3, figsize=(11, 3.2 * len(rtts)), sharey=True, squeeze=False)
    width = 0.8 / max(1, len(shown))
    for row, rtt in enumerate(rtts):
        for ax, state in zip(axes[row], STATES):
            for i, system in enumerate(shown):
                xs, ys = [], []
                for j, key in enumerate(keys):
                    value = _ratio(med.get((rtt, key, system, state)), med.get((rtt, key, PEER, state)))
                    if value is not None:
                        xs.append(j + (i - (len(shown) - 1) / 2) * width)
                        ys.append(value)
                ax.bar(xs, ys, width, label=names.get(system, system), color=colors.get(system))
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_yscale("log")
            ax.set_ylim(0.01, 10)
            ax.set_yticks([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10])
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_title(f"{state}, RTT {rtt:g} ms", fontsize=9)
            ax.set_xticks(range(len(keys)))
            ax.set_xticklabels(keys, fontsize=8)
            ax.grid(axis="y", which="major", alpha=0.3)
        axes[row][0].set_ylabel("time ÷ kernel NFSv3 (log)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("lazystore vs the kernel NFS client (seed's ro,nfsvers=3 = 1×; lower is better), medians in the "
                 f"lab guest; host load {results['load_start']} → {results['load_end']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


if __name__ == "__main__":
    import json
    import os
    import sys
    with open(sys.argv[1]) as f:
        data = json.load(f)
    with open(os.path.join(sys.argv[2], "lab-results.md"), "w") as f:
        f.write(markdown(data))
    chart(data, os.path.join(sys.argv[2], "lab-results.png"))
