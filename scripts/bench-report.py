#!/usr/bin/env python3
"""Summarises chatbench JSON lines from scripts/bench: medians per implementation and
workload, and the ratio ours / gossipsub, as a Markdown table; with a "baseline" run
(an earlier build, BASELINE_BIN) also its table and the ratio of this build's ratio to
the baseline's (above 1.00 is worse for lower-is-better metrics). Standard library only."""
import json
import statistics
import sys
from collections import defaultdict

METRICS = [
    # (name, getter, unit, better)
    ("p50 ms", lambda r: r["latency_ms"]["p50"], "lower"),
    ("p99 ms", lambda r: r["latency_ms"]["p99"], "lower"),
    ("max ms", lambda r: r["latency_ms"]["max"], "lower"),
    ("deliveries/s", lambda r: r["throughput_dps"], "higher"),
    ("delivery %", lambda r: 100.0 * r["delivery_ratio"], "higher"),
    ("idle RSS MiB", lambda r: r["idle_rss_mib"]["median"], "lower"),
    ("idle anon MiB", lambda r: (r.get("idle_rss_anon_mib") or {}).get("median"), "lower"),
    ("peak RSS MiB", lambda r: r["peak_rss_mib"]["median"], "lower"),
    ("ready (dialers) ms", lambda r: 1000 * r["startup_to_ready_dialers_s"]["median"], "lower"),
    ("CPU µs/delivery", lambda r: 1e6 * r["cpu_s_total"] / max(1, r["delivered"]), "lower"),
]


def main(paths):
    runs = defaultdict(list)
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    r = json.loads(line)
                    impl, _, workload = r["label"].partition("/")
                    runs[(workload, impl)].append(r)
    workloads = sorted({w for w, _ in runs})
    impls = [i for i in ("peergroup", "baseline") if any(k[1] == i for k in runs)]
    ratios = {}
    for impl in impls:
        print(f"\n{impl} against gossipsub\n")
        ratios[impl] = table(runs, workloads, impl)
    if len(impls) == 2:
        print("\nthis build against the baseline (ratio of the ratios to gossipsub)\n")
        print("| workload | metric | peergroup / gossipsub | baseline / gossipsub | change |")
        print("| --- | --- | --- | --- | --- |")
        for key, now in ratios["peergroup"].items():
            before = ratios["baseline"].get(key)
            if now is not None and before:
                print(f"| {key[0]} | {key[1]} | {now:.2f} | {before:.2f} | {now / before:.2f} |")


def table(runs, workloads, impl):
    out = {}
    print(f"| workload | metric | {impl} (median) | gossipsub (median) | ratio | runs | every run, {impl} / gossipsub |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for w in workloads:
        ours, theirs = runs.get((w, impl), []), runs.get((w, "gossipsub"), [])
        for name, get, _ in METRICS:
            def values(rs):
                out = []
                for r in rs:
                    try:
                        v = get(r)
                    except (KeyError, TypeError):
                        v = None
                    if v is not None:
                        out.append(v)
                return out
            a, b = values(ours), values(theirs)
            if not a and not b:
                continue
            ma = statistics.median(a) if a else None
            mb = statistics.median(b) if b else None
            ratio = f"{ma / mb:.2f}" if ma is not None and mb else "-"
            out[(w, name)] = ma / mb if ma is not None and mb else None
            fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.2f}")
            every = ", ".join(fmt(v) for v in a) + " / " + ", ".join(fmt(v) for v in b)
            print(f"| {w} | {name} | {fmt(ma)} | {fmt(mb)} | {ratio} | {len(a)}/{len(b)} | {every} |")
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: bench-report.py RESULTS.jsonl...")
    main(sys.argv[1:])
