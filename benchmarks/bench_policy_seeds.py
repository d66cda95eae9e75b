"""How much a closed-loop figure moves with the policy's own seed (and what a change is worth).

One run of `orch simulate` is one world seed and one seed of the policy's posterior draws; on
the standard world the second alone moved `lints`' share of the oracle from -4% to 34%
(docs/policies.md, "What one run says"). This runs the oracle and the best single campaign once,
then the learner once per policy seed (``settings.policy.params.seed`` in a copy of the
scenario, with any ``--param``), several at a time, and prints each run and the mean, standard
deviation and range: compare methods on means, not on one run.

    python benchmarks/bench_policy_seeds.py --seeds 8
    python benchmarks/bench_policy_seeds.py --scenario all-harmful --customers 10000 --days 30
    python benchmarks/bench_policy_seeds.py --param exploit_confidence=0.8 --seeds 4
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulations.scenario import load_scenario  # noqa: E402


def _value(params: str) -> object:
    return yaml.safe_load(params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenario", default="standard")
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--policy", default="lints")
    ap.add_argument("--seeds", type=int, default=4, help="policy seeds 0..N-1")
    ap.add_argument("--world-seed", type=int, default=None, help="the scenario's if not given")
    ap.add_argument("--param", action="append", default=[], help="KEY=VALUE policy param")
    ap.add_argument("--jobs", type=int, default=2, help="simulations at a time")
    args = ap.parse_args()
    extra = dict(p.split("=", 1) for p in args.param)
    source = load_scenario(args.scenario)
    path = Path(args.scenario)
    if not path.suffix:
        path = ROOT / "simulations" / "scenarios" / f"{args.scenario}.yaml"
    data = yaml.safe_load(path.read_text())
    orch = str(Path(sys.executable).with_name("orch"))
    with tempfile.TemporaryDirectory() as tmp:
        base = [
            orch,
            "simulate",
            "",
            "--customers",
            str(args.customers),
            "--days",
            str(args.days),
            "--workers",
            "1",
            "--format",
            "json",
        ]
        if args.world_seed is not None:
            base += ["--seed", str(args.world_seed)]
        jobs: dict[str, list[str]] = {}
        ref = Path(tmp, "reference.yaml")
        ref.write_text(yaml.safe_dump(data, sort_keys=False))
        jobs["reference"] = [str(ref), "--policy", "oracle", "--policy", "best-single"]
        for seed in range(args.seeds):
            variant = copy.deepcopy(data)
            policy = variant["plan"].setdefault("settings", {}).setdefault("policy", {})
            policy["name"] = args.policy
            policy["params"] = {
                **policy.get("params", {}),
                "seed": seed,
                **{k: _value(v) for k, v in extra.items()},
            }
            scenario = Path(tmp, f"seed{seed}.yaml")
            scenario.write_text(yaml.safe_dump(variant, sort_keys=False))
            jobs[f"seed {seed}"] = [str(scenario), "--policy", args.policy]
        started = time.perf_counter()
        running: dict[str, subprocess.Popen[str]] = {}
        results: dict[str, dict] = {}
        pending = list(jobs)
        while pending or running:
            while pending and len(running) < args.jobs:
                name = pending.pop(0)
                out = Path(tmp, name.replace(" ", ""))
                cmd = base[:2] + [jobs[name][0]] + base[3:] + jobs[name][1:] + ["--out", str(out)]
                running[name] = subprocess.Popen(
                    cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                )
            for name, proc in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                if proc.returncode != 0:
                    err = proc.stderr.read() if proc.stderr else ""
                    sys.exit(f"{name} failed ({proc.returncode}): {err[-2000:]}")
                out = Path(tmp, name.replace(" ", ""), "results.json")
                results[name] = json.loads(out.read_text())["policies"]
            time.sleep(0.5)
    seconds = time.perf_counter() - started
    oracle = results["reference"]["oracle"]["incremental_value"]
    single = results["reference"]["best-single"]["incremental_value"]
    world = args.world_seed if args.world_seed is not None else source.seed
    print(
        f"{source.name}: {args.customers:,} customers, {args.days} days (world seed {world}), "
        f"{args.policy}{' ' + str(extra) if extra else ''} over {args.seeds} policy seeds, "
        f"{seconds:.0f} s"
    )
    print(f"oracle {oracle:+,.0f}; best single {single:+,.0f} ({single / oracle:.1%} of it)")
    shares = []
    for seed in range(args.seeds):
        p = results[f"seed {seed}"][args.policy]
        shares.append(p["incremental_value"] / oracle)
        cumulative = sum(p["daily"]["value"])
        print(
            f"  seed {seed}: {p['incremental_value']:+10,.0f}  {shares[-1]:6.1%} of the oracle  "
            f"{p['incremental_value'] / single:5.2f}x best single  "
            f"cumulative value per customer {cumulative:+.3f}"
        )
    sd = statistics.stdev(shares) if len(shares) > 1 else 0.0
    print(
        f"mean {statistics.mean(shares):.1%} of the oracle (sd {sd:.1%}, "
        f"{min(shares):.1%} to {max(shares):.1%}); "
        f"{statistics.mean(shares) * oracle / single:.2f}x best single"
    )


if __name__ == "__main__":
    main()
