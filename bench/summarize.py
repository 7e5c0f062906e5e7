#!/usr/bin/env python3
"""Table of a bench/run results file: medians over the rounds, ratio to hyper.

usage: bench/summarize.py [--baseline hyper] RESULTS.tsv

Columns: test, server, median req/s, ratio to the baseline's median, median
server CPU (% of one CPU), median requests per server CPU-second (req/s divided
by the server's CPU share: meaningful even when the one client core is the
bottleneck), and the ratio of that to the baseline; then the median CPU of the
client (wrk or h2load) and of other processes, the number of runs, and the
notes of runs that had errors (non-2xx answers, socket errors, h2load
failed/errored requests, ...).
"""
import argparse
import csv
import statistics
from collections import defaultdict


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="hyper")
    ap.add_argument("results")
    args = ap.parse_args()

    runs = defaultdict(list)
    tests, servers = [], []
    with open(args.results, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            t, s = row["test"], row["server"]
            if t not in tests:
                tests.append(t)
            if s not in servers:
                servers.append(s)
            runs[t, s].append(row)
    if not runs:
        print("no results in %s" % args.results)
        return 1

    def med(t, s, col):
        vals = [v for v in (num(r[col]) for r in runs[t, s]) if v is not None]
        return statistics.median(vals) if vals else None

    def ratio(v, base):
        return "%.2fx" % (v / base) if v is not None and base else "-"

    def fmt(v, spec="{:,.0f}"):
        return spec.format(v) if v is not None else "n/a"

    head = ["test", "server", "req/s (median)", "vs " + args.baseline, "server CPU%",
            "req per server CPU-s", "vs " + args.baseline, "client CPU%", "other CPU%", "runs", "notes"]
    rows = []
    for t in tests:
        base_rps = med(t, args.baseline, "req_s")
        base_eff = med(t, args.baseline, "req_per_srv_cpu_s")
        for s in servers:
            if (t, s) not in runs:
                continue
            rps = med(t, s, "req_s")
            eff = med(t, s, "req_per_srv_cpu_s")
            notes = sorted({r["note"] for r in runs[t, s] if r.get("note", "").strip()})
            rows.append([t, s, fmt(rps), ratio(rps, base_rps), fmt(med(t, s, "srv_cpu_pct")),
                         fmt(eff), ratio(eff, base_eff), fmt(med(t, s, "cli_cpu_pct")),
                         fmt(med(t, s, "foreign_cpu_pct")), str(len(runs[t, s])),
                         "; ".join(notes)])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
