"""Benchmark of the closed loop (issue: `orch simulate standard --customers 100000 --days 90
--policy lints` within 15 minutes; the demo, 20k customers × 60 days, within 3 minutes).

Runs `orch simulate` as a user would, in a child process, and prints wall time, peak memory of
the process tree and the per-day cost; then the figures of the comparison table.

    python benchmarks/bench_simulate.py --customers 100000 --days 90 --policy lints
    python benchmarks/bench_simulate.py --demo
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenario", default="standard")
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--policy", action="append", default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--demo", action="store_true", help="time `orch demo` instead")
    args = ap.parse_args()
    orch = str(Path(sys.executable).with_name("orch"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.demo:
            cmd = [orch, "demo", "--out", tmp]
        else:
            cmd = [orch, "simulate", args.scenario, "--customers", str(args.customers)]
            cmd += ["--days", str(args.days), "--format", "json", "--out", tmp]
            for p in args.policy or ["lints"]:
                cmd += ["--policy", p]
            if args.workers:
                cmd += ["--workers", str(args.workers)]
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if done.returncode != 0:
            sys.exit(f"failed ({done.returncode}): {done.stderr[-2000:]}")
        print(f"command: {' '.join(cmd[1:])}")
        print(f"wall time: {seconds:.1f} s; peak RSS of the largest process: {peak:,.0f} MB")
        if args.demo:
            print(done.stdout[-3000:])
            return
        data = json.loads(Path(tmp, "results.json").read_text())
    print(f"per simulated day: {seconds / args.days:.2f} s")
    for name, p in data["policies"].items():
        share = p["share_of_oracle"]
        print(
            f"  {name:12s} value/customer-day {p['value_per_customer_day']:+.4f}"
            + (f"  share of oracle {share:.0%}" if share is not None else "")
            + f"  first promotion day {p['first_promotion_day']}"
        )


if __name__ == "__main__":
    main()
