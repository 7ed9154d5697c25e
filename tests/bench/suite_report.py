"""Markdown table and chart of the suite's results (results.json → results.md, results.png)."""

import statistics
import time

STATES = ("cold", "disk-warm", "hot")


def _median(values):
    return statistics.median(values) if values else None


def _fmt_s(seconds):
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _fmt_b(n):
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def medians(results):
    """{(workload, system key, state): median seconds or None}."""
    out = {}
    for name, cell in results["cells"].items():
        key, system = name.split("|")
        for state in STATES:
            out[key, system, state] = None if cell["problem"] else _median(cell[state])
    return out


def _rtt_cells(results):
    """(rtt string, workload, system key, cell) of every round trip's cells."""
    rtts = [f"{r:g}" for r in results.get("rtts", [0])]
    for rtt in rtts:
        for name, cell in results.get("rtt_cells", {}).get(rtt, results["cells"] if rtt == rtts[0] else {}).items():
            key, system = name.split("|")
            yield rtt, key, system, cell


def rtt_medians(results):
    """{(workload, system key, rtt string): median cold seconds or None}; native from the first."""
    out = {}
    rtts = [f"{r:g}" for r in results.get("rtts", [0])]
    for rtt, key, system, cell in _rtt_cells(results):
        out[key, system, rtt] = None if cell["problem"] else _median(cell["cold"])
    for (key, system, rtt), value in list(out.items()):
        if system == "native":
            for other in rtts:
                out[key, "native", other] = value
    return out


def _rtt_table(add, results, note):
    rtts = [f"{r:g}" for r in results.get("rtts", [0])]
    systems, keys = results["systems"], results["workloads"]
    med = rtt_medians(results)
    add("## Cold, per round trip\n")
    add("Every server behind a delay line (`tests/bench/delay_line.c`) holding each segment for half the "
        "round trip, both ways; native has no wire. Cold = fresh mount, empty cache, page cache dropped. "
        f"Medians of {results['runs']} runs at the first round trip, {results.get('rtt_runs', 1)} at the others.\n")
    add("| workload | RTT | " + " | ".join(name for _, name in systems) + " |")
    add("|---|---:|" + "---:|" * len(systems))
    for key in keys:
        for rtt in rtts:
            row = [key, f"{rtt} ms"]
            native = med.get((key, "native", rtt))
            for system, _name in systems:
                cells = results.get("rtt_cells", {}).get(rtt, results["cells"] if rtt == rtts[0] else {})
                cell = cells.get(f"{key}|{system}") if system != "native" else True
                value = med.get((key, system, rtt))
                if cell is None:
                    row.append("–")
                elif cell is not True and cell["problem"]:
                    row.append(note(cell["problem"]))
                else:
                    text = _fmt_s(value)
                    if system != "native" and native and value is not None:
                        text += f" ({value / native:.2f}×)"
                    row.append(text)
            add("| " + " | ".join(row) + " |")
    add("")


def profiled_medians(results):
    """{(workload, system key, rtt string): median seconds of the profiled cold runs}."""
    out = {}
    for rtt, key, system, cell in _rtt_cells(results):
        if not cell["problem"] and cell.get("profiled"):
            out[key, system, rtt] = _median(cell["profiled"])
    return out


def _profiled_table(add, results):
    pmed, med = profiled_medians(results), rtt_medians(results)
    if not pmed:
        return
    rtts = [f"{r:g}" for r in results.get("rtts", [0])]
    names = dict(results["systems"])
    systems = [s for s, _ in results["systems"] if any(k[1] == s for k in pmed)]
    add("## Cold with a profile, per round trip\n")
    add("Another executor's cold start given the list of files an earlier cold run read (`lazystore-ctl reads`): "
        "fresh mount, empty cache, page cache dropped, then `lazystore-ctl prefetch --from PROFILE` (it returns once "
        "the files are found; they are fetched, 8 at once, while the workload runs) and at once the workload, "
        "timed from the prefetch's start to the workload's end. Time ÷ native; the plain cold figure in brackets.\n")
    add("| workload | RTT | " + " | ".join(names[s] + " + profile" for s in systems) + " |")
    add("|---|---:|" + "---:|" * len(systems))
    for key in sorted({k[0] for k in pmed}):
        for rtt in rtts:
            native = med.get((key, "native", rtt))
            row = [key, f"{rtt} ms"]
            for system in systems:
                value, cold = pmed.get((key, system, rtt)), med.get((key, system, rtt))
                if value is None or not native:
                    row.append("–")
                    continue
                text = f"{_fmt_s(value)} ({value / native:.2f}×"
                row.append(text + (f"; cold {cold / native:.2f}×)" if cold else ")"))
            add("| " + " | ".join(row) + " |")
    add("")


def _target_rtt(results):
    rtts = [f"{r:g}" for r in results.get("rtts", [0])]
    return "0.5" if "0.5" in rtts else rtts[0]


def _targets(add, results, med, lz, lz_name):
    systems, keys, cells = results["systems"], results["workloads"], results["cells"]
    add(f"## Targets ({lz_name})\n")
    add("| target | workload | measured | met |")
    add("|---|---|---|---|")
    peers = [s for s, _ in systems if s != "native" and not s.startswith("lazystore-")]
    names = dict((s, n) for s, n in systems)
    for state, limit, label in (("hot", 1.1, "hot ≤ 1.1× native"), ("disk-warm", 1.5, "disk-warm ≤ 1.5× native")):
        for key in keys:
            ours, native = med.get((key, lz, state)), med.get((key, "native", state))
            if ours is None or not native:
                add(f"| {label} | {key} | no figure | **no** |")
                continue
            ratio = ours / native
            add(f"| {label} | {key} | {ratio:.2f}× | {'yes' if ratio <= limit else f'**no** (+{(ratio / limit - 1) * 100:.0f} %)'} |")
    rtt = _target_rtt(results)
    rmed = rtt_medians(results)
    for key in [k for k in keys if k in ("W1", "W2", "W3")]:
        ours, native = rmed.get((key, lz, rtt)), rmed.get((key, "native", rtt))
        if ours is None:
            add(f"| cold at {rtt} ms faster than every peer | {key} | no figure | **no** |")
            continue
        others = [(rmed[key, p, rtt], names[p]) for p in peers if rmed.get((key, p, rtt)) is not None]
        if others:
            best, best_name = min(others)
            add(f"| cold at {rtt} ms faster than every peer | {key} | {_fmt_s(ours)} vs best peer {best_name} "
                f"{_fmt_s(best)} ({ours / best:.2f}×) | {'yes' if ours < best else '**no**'} |")
        if native:
            ratio = ours / native
            add(f"| cold at {rtt} ms ≤ 2× native | {key} | {ratio:.2f}× | "
                f"{'yes' if ratio <= 2 else f'**no** (+{(ratio / 2 - 1) * 100:.0f} %)'} |")
            profiled = profiled_medians(results).get((key, lz, rtt))
            if profiled is not None:
                ratio = profiled / native
                add(f"| cold at {rtt} ms with a profile ≤ 2× native | {key} | {ratio:.2f}× | "
                    f"{'yes' if ratio <= 2 else f'**no** (+{(ratio / 2 - 1) * 100:.0f} %)'} |")
    if lz == "lazystore-nfs":
        nfs, http = rmed.get(("W4 seq", lz, rtt)), rmed.get(("W4 seq", "lazystore-http", rtt))
        if nfs and http:
            ratio = http / nfs  # throughput ratio
            add(f"| W4 seq cold at {rtt} ms ≥ 0.8× HTTP's throughput | W4 seq | {ratio:.2f}× | "
                f"{'yes' if ratio >= 0.8 else '**no**'} |")
    cell = cells.get(f"W4 rand|{lz}")
    if cell and not cell["problem"] and cell["upstream_bytes"] and results.get("randread_bytes"):
        # Over HTTP every body byte received counts (NAR ranges, leaf hashes, narinfo, manifest):
        # the first cold run's http_bytes; over NFS the READ replies' data (upstream_bytes).
        moved = cell.get("counters", {}).get("cold", {}).get("http_bytes") or _median(cell["upstream_bytes"])
        ratio = moved / results["randread_bytes"]
        add(f"| W4 rand cold moves ≤ 2× the bytes read | W4 rand | {ratio:.2f}× "
            f"({_fmt_b(moved)} received for {_fmt_b(results['randread_bytes'])} read) | "
            f"{'yes' if ratio <= 2 else '**no**'} |")
    for key, limit in (("W2", 1.5), ("W3", 1.2)):
        cell, w5 = cells.get(f"{key}|{lz}"), results["w5"].get(key)
        if not cell or not w5 or cell["problem"] or not cell["server_bytes"]:
            continue
        sent = _median(cell["server_bytes"])
        ratio = sent / w5["read_bytes"]
        add(f"| W5 ≤ {limit}× bytes read | {key} | {ratio:.2f}× (server sent {_fmt_b(sent)} for {_fmt_b(w5['read_bytes'])}) "
            f"| {'yes' if ratio <= limit else '**no**'} |")
    add("")


def markdown(results):
    systems = results["systems"]
    keys = results["workloads"]
    med = medians(results)
    cells = results["cells"]
    lines = []
    add = lines.append
    add("# lazystore benchmark suite — results\n")
    add(f"Run {results.get('date') or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {results['cpus']} CPUs shared with other "
        f"work; load average (1/5/15 min) at start {results['load_start']}, at end {results['load_end']}; "
        f"whole run {results['seconds']} s. Medians of {results['runs']} cold and {results['runs']} disk-warm "
        f"runs (own timing loop: fresh mount / restart + `echo 3 > /proc/sys/vm/drop_caches` before each) and "
        f"{results['hot_runs']} hot runs (`hyperfine -N`, right after a run of the same workload). "
        "Ratio = time / native time of the same state (lower is better). "
        f"Daemon `{results.get('bin', '?')}` built {results.get('bin_mtime', '?')}; kernel {results.get('kernel', '?')}. "
        f"This table: round trip {results.get('rtts', [0])[0]:g} ms (cold at every round trip: next table).\n")
    add("Workloads:\n")
    for key in keys:
        add(f"- **{key}**: {results['describe'][key]}")
    add("")
    notes = {}

    def note(text):
        if text not in notes:
            notes[text] = len(notes) + 1
        return f"n/a [{notes[text]}]"

    header = "| workload | state | " + " | ".join(name for _, name in systems) + " |"
    add(header)
    add("|---|---|" + "---:|" * len(systems))
    for key in keys:
        for state in STATES:
            row = [key, state]
            native = med.get((key, "native", state))
            for system, _name in systems:
                cell = cells.get(f"{key}|{system}")
                if cell is None:
                    row.append("–")
                elif cell["problem"]:
                    row.append(note(cell["problem"]))
                else:
                    value = med[key, system, state]
                    text = _fmt_s(value)
                    if system != "native" and native:
                        text += f" ({value / native:.2f}×)"
                    if state == "disk-warm" and cell["warm_is_cold"] and system != "native":
                        text += " ᶜ"
                    row.append(text)
            add("| " + " | ".join(row) + " |")
    add("")
    add("ᶜ no disk cache that survives a restart: its disk-warm run is a cold start (the cold figures). "
        "Native disk-warm = native cold (page cache dropped; a local disk has nothing else to warm).")
    add("")
    _rtt_table(add, results, note)
    _profiled_table(add, results)
    for text, number in notes.items():
        add(f"[{number}] {text}\n")
    if results.get("chart_problem"):
        add(results["chart_problem"] + "\n")
    add("")

    # W5
    add("## W5: bytes transferred, W2 and W3 cold\n")
    add("Server side: TCP payload bytes the server sent on the connections of the mount during the "
        "workload (`ss -ti` `bytes_sent` of ganesha's or sshd's established sockets, after minus before; "
        "includes RPC/SSH framing and encryption; for lazystore HTTP: nginx's `$body_bytes_sent` of every "
        "request, narinfo, listing and range replies, without HTTP headers). lazystore also counts its own `upstream_bytes` "
        "(`getfattr -n user.lazystore.stats`). \"read\" = total size of the distinct store files the "
        "workload opens (strace of the native run; whole files, an upper bound of what it reads).\n")
    add("| workload | store path size | files opened | bytes read | system | sent by server | ÷ read | "
        "÷ store path | lazystore upstream_bytes | ÷ read |")
    add("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for key in ("W2", "W3"):
        w5 = results["w5"].get(key)
        if not w5:
            continue
        for system, name in systems:
            cell = cells.get(f"{key}|{system}")
            if cell is None or system == "native":
                continue
            if cell["problem"]:
                add(f"| {key} | {_fmt_b(w5['closure_bytes'])} | {w5['read_files']} | {_fmt_b(w5['read_bytes'])} | "
                    f"{name} | {note(cell['problem'])} | | | | |")
                continue
            sent = _median(cell["server_bytes"])
            up = _median(cell["upstream_bytes"])
            add(f"| {key} | {_fmt_b(w5['closure_bytes'])} | {w5['read_files']} | {_fmt_b(w5['read_bytes'])} | "
                f"{name} | {_fmt_b(sent)} | {sent / w5['read_bytes']:.2f}× | {sent / w5['closure_bytes']:.3f}× | "
                + (f"{_fmt_b(up)} | {up / w5['read_bytes']:.2f}× |" if up is not None else "| |"))
    add("")

    # lazystore's own counters
    fields = ("upstream_requests", "upstream_bytes", "served_bytes", "chunk_misses", "chunk_hits",
              "readahead_chunks", "metadata_misses", "lookups", "ioctl_requests")
    for lz, lz_name in [(s, n) for s, n in systems if s.startswith("lazystore-")]:
        add(f"## {lz_name} counters per workload run (first run of each state; hot: all hot runs)\n")
        add("Deltas of `user.lazystore.stats` over the timed command(s).\n")
        add("| workload | state | " + " | ".join(fields) + " |")
        add("|---|---|" + "---:|" * len(fields))
        for key in keys:
            cell = cells.get(f"{key}|{lz}")
            if not cell:
                continue
            for state in STATES:
                c = cell.get("counters", {}).get(state)
                if c is None:
                    continue
                add(f"| {key} | {state} | " + " | ".join(str(c.get(f, 0)) for f in fields) + " |")
        add("")

    # Targets
    for lz, lz_name in [(s, n) for s, n in systems if s.startswith("lazystore-")]:
        _targets(add, results, med, lz, lz_name)
    if results.get("lazystore_problems"):
        add("\nlazystore daemon problems seen: " + "; ".join(results["lazystore_problems"][:5]))
    add("")
    return "\n".join(lines)


def chart(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    med = medians(results)
    rmed = rtt_medians(results)
    rtts = [f"{r:g}" for r in results.get("rtts", [0])]
    keys = results["workloads"]
    systems = [(s, n) for s, n in results["systems"]
               if s != "native" and not all(results["cells"].get(f"{k}|{s}", {}).get("problem") for k in keys)]
    panels = [(f"cold, {rtt} ms RTT", lambda k, s, rtt=rtt: rmed.get((k, s, rtt))) for rtt in rtts]
    panels += [(state, lambda k, s, state=state: med.get((k, s, state))) for state in ("disk-warm", "hot")]
    colors = {"lazystore-nfs": "#1f77b4", "lazystore-http": "#17becf", "sshfs": "#ff7f0e",
              "sshfs-cached": "#d62728", "rclone": "#2ca02c"}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.8), sharey=True)
    width = 0.8 / max(1, len(systems))
    for ax, (title, value) in zip(axes, panels):
        for i, (system, name) in enumerate(systems):
            xs, ys, missing = [], [], []
            for j, key in enumerate(keys):
                ours, native = value(key, system), value(key, "native")
                x = j + (i - (len(systems) - 1) / 2) * width
                if ours is None or not native:
                    missing.append(x)
                else:
                    xs.append(x)
                    ys.append(ours / native)
            ax.bar(xs, ys, width, label=name, color=colors.get(system))
            for x in missing:
                ax.text(x, 1.0, "×", ha="center", va="bottom", color=colors.get(system), fontsize=9)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_ylim(0.5, 100)
        ax.set_yticks([0.5, 1, 2, 5, 10, 20, 50, 100])
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(keys, fontsize=7, rotation=30)
        ax.grid(axis="y", which="major", alpha=0.3)
    axes[0].set_ylabel("time ÷ native (log; lower is better)")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"lazystore vs peers, medians (× = cannot run); load {results['load_start']} → {results['load_end']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


if __name__ == "__main__":
    # Regenerates results.md and results.png from a results.json: suite_report.py JSON OUTDIR
    import json
    import os
    import sys
    with open(sys.argv[1]) as f:
        data = json.load(f)
    with open(os.path.join(sys.argv[2], "results.md"), "w") as f:
        f.write(markdown(data))
    chart(data, os.path.join(sys.argv[2], "results.png"))
