"""The example shop's customers answer the engine: their purchases after the extract, sends or not.

The events of ``generate.py`` end on 2026-10-31; the tour then runs the engine in November. This
script writes what the same customers buy from 2026-11-01 to ``--until``: every customer who is
still alive keeps buying at their own rate (control groups included: that is the baseline an
uplift is measured against), and a customer on a send list may buy once more inside the send's
measurement window. The effect is planted: a discount wins mostly the customers who like
discounts (and costs margin on what they buy), content nudges everyone a little.

    python examples/respond.py sends.csv [more-sends.csv ...] --until 2026-11-30 --out responses.csv

The customers are rebuilt from the generator's seed, so the same sends always give the same
file. ``orch events import responses.csv`` then measures the campaigns.
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import (  # noqa: E402
    CATEGORIES,
    CHANNELS,
    DISCOUNT_LEVELS,
    DISCOUNT_WEIGHTS,
    EVENT_COLUMNS,
    make_calendar,
    make_customers,
    pick,
)

START = date(2026, 11, 1)  # the day after the extract
CONTENT_LIFT = 0.03  # chance of one more purchase in the window after a send without discount
DISCOUNT_LIFT = 0.25  # ... after a discount, times the customer's discount affinity


def treatment_discounts(plan_path: Path) -> dict[tuple[str, str], float]:
    """``(campaign, treatment) -> discount`` from the plan's treatment features."""
    plan = yaml.safe_load(plan_path.read_text(encoding="utf-8"))
    out = {}
    for camp in plan.get("campaigns", []):
        for t in camp.get("treatments", []):
            out[(camp["id"], t["id"])] = float((t.get("features") or {}).get("discount", 0.0))
    return out


def read_sends(paths: list[Path]) -> list[tuple[int, str, str, date, date]]:
    """(customer index, campaign, treatment, send date, window end) of every send."""
    sends = []
    for path in paths:
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                end = row.get("window_end") or row["send_date"]
                sends.append(
                    (
                        int(row["customer_id"].lstrip("C")) - 1,
                        row["campaign_id"],
                        row["treatment_id"],
                        date.fromisoformat(row["send_date"][:10]),
                        date.fromisoformat(end[:10]),
                    )
                )
    return sends


def respond(
    sends: list[tuple[int, str, str, date, date]],
    discounts: dict[tuple[str, str], float],
    until: date,
    *,
    seed: int = 7,
    n_customers: int = 5000,
) -> list[list[str]]:
    """The purchases of 2026-11-01 .. ``until`` as rows of events.csv."""
    rng = np.random.default_rng(seed)
    cal = make_calendar()
    cust = make_customers(rng, n_customers, cal)  # the generator's first draws: the same people
    out_rng = np.random.default_rng([seed, 2, (until - START).days])
    days = (until - START).days + 1
    start_index = float(cal.n_days)  # day numbers of the calendar continue past the extract
    first_day = cust["signup"].astype(float) + cust["first_delay"]
    death = first_day + cust["lifetime"]
    alive_from = np.maximum(first_day, start_index)
    alive_to = np.minimum(death, start_index + days)
    exposure = np.where(cust["buyer"], np.maximum(alive_to - alive_from, 0.0), 0.0)
    counts = out_rng.poisson(cust["rate"] / 365.25 * exposure)
    who = np.repeat(np.arange(n_customers), counts)
    when = alive_from[who] + out_rng.random(len(who)) * exposure[who]
    extra_who, extra_when, extra_discount = [], [], []
    for c, camp, treat, sent, end in sends:
        discount = discounts.get((camp, treat), 0.0)
        lift = DISCOUNT_LIFT * cust["discount_affinity"][c] if discount > 0 else CONTENT_LIFT
        if not cust["buyer"][c] or death[c] <= start_index or out_rng.random() >= lift:
            continue
        span = max((min(end, until) - sent).days, 1)
        extra_who.append(c)
        extra_when.append(start_index + (sent - START).days + out_rng.random() * span)
        extra_discount.append(discount)
    who = np.concatenate([who, np.array(extra_who, dtype=np.int64)])
    when = np.concatenate([when, np.array(extra_when, dtype=np.float64)])
    keen = (
        out_rng.random(len(who) - len(extra_who))
        < cust["discount_affinity"][who[: len(who) - len(extra_who)]]
    )
    own = np.where(
        keen, DISCOUNT_LEVELS[pick(out_rng, np.tile(DISCOUNT_WEIGHTS, (len(keen), 1)))], 0.0
    )
    discount = np.concatenate([own, np.array(extra_discount, dtype=np.float64)])
    gross = out_rng.gamma(6.0, cust["spend_scale"][who])
    amount = np.maximum(np.round(gross * (1.0 - discount), 2), 1.0)
    category = pick(out_rng, cust["category_p"][who])
    channel = pick(out_rng, cust["channel_p"][who])
    order = np.argsort(when, kind="stable")
    base = datetime.combine(START, datetime.min.time())
    rows = []
    for k, i in enumerate(order, start=1):
        moment = base + timedelta(days=float(when[i] - start_index))
        moment = moment.replace(hour=9 + int(out_rng.integers(0, 12)))
        rows.append(
            [
                f"R{k:07d}",
                f"C{who[i] + 1:06d}",
                moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "purchase",
                f"{amount[i]:.2f}",
                f"{discount[i]:.2f}",
                CATEGORIES[category[i]],
                CHANNELS[channel[i]],
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sends", nargs="+", type=Path, help="send lists from `orch export`")
    parser.add_argument("--until", type=date.fromisoformat, default=date(2026, 11, 30))
    parser.add_argument("--out", type=Path, default=Path("responses.csv"))
    parser.add_argument("--plan", type=Path, default=HERE / "plan.yaml")
    parser.add_argument("--seed", type=int, default=7, help="the generator's seed (default 7)")
    parser.add_argument("--customers", type=int, default=5000)
    args = parser.parse_args(argv)
    if args.until < START:
        parser.error(f"--until must be on or after {START}")
    missing = [str(p) for p in args.sends if not p.exists()]
    if missing:
        parser.error(f"no such send list: {', '.join(missing)}")
    rows = respond(
        read_sends(args.sends),
        treatment_discounts(args.plan),
        args.until,
        seed=args.seed,
        n_customers=args.customers,
    )
    with args.out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(EVENT_COLUMNS)
        w.writerows(rows)
    print(f"{args.out}: {len(rows)} purchases from {START} to {args.until}")


if __name__ == "__main__":
    main()
