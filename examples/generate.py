"""Generate the example customers and events: a seeded, reproducible retail data set.

Each customer follows a heterogeneous buy-till-you-die process, the kind RFM and BG/NBD / Pareto-NBD
models assume: purchases arrive as a Poisson process whose yearly rate is drawn from a gamma
distribution, each customer drops out after an exponential lifetime (itself gamma-distributed across
customers), and order values follow a gamma-gamma spend model. A few % of customers sign up and
never buy. Seasonality (weekends, Black Friday, Christmas, sales) modulates both signups and
purchases. Returns follow some purchases; visits (browsing, amount 0) come at a customer's own pace.

    python examples/generate.py [--seed 7] [--customers 5000] [--out examples]

The same seed and customer count always give byte-identical files. ``plan.yaml`` is written by
hand; when ``--out`` is another directory it is copied there, so that directory holds a full set.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

HERE = Path(__file__).resolve().parent

REFERENCE = np.datetime64("2026-11-01")  # the day after the extract; ages are computed on it
HISTORY_START = np.datetime64("2023-11-01")  # first signup day (three years of customers)
EVENTS_START = np.datetime64("2025-11-01")  # events cover one year, up to 2026-10-31
DAYS_PER_YEAR = 365.25

COUNTRIES = ("ES", "FR", "DE", "IT", "PT")
COUNTRY_WEIGHTS = (0.42, 0.18, 0.14, 0.16, 0.10)
GENDERS = ("f", "m", "x", "")
GENDER_WEIGHTS = (0.56, 0.38, 0.02, 0.04)
REGIONS = ("north", "south", "east", "west", "online")
REGION_WEIGHTS = (0.19, 0.21, 0.17, 0.18, 0.25)
CATEGORIES = ("apparel", "shoes", "beauty", "home", "sports")
CATEGORY_WEIGHTS = np.array([0.34, 0.20, 0.16, 0.15, 0.15])
RETURN_RATE = np.array([0.12, 0.10, 0.02, 0.05, 0.06])  # by category: clothes come back most
CHANNELS = ("web", "store", "app")
DISCOUNT_LEVELS = np.array([0.05, 0.10, 0.15, 0.20, 0.25, 0.30])
DISCOUNT_WEIGHTS = np.array([0.10, 0.30, 0.20, 0.25, 0.05, 0.10])
TIER_THRESHOLDS = (250.0, 700.0)  # net spend over the last 12 months: silver, gold

# Local hour of day, 07:00-23:00 only so that a UTC timestamp never falls on the previous day.
_STORE_HOURS = [0] * 10 + [3, 5, 6, 5, 3, 3, 4, 6, 8, 8, 6, 2] + [0] * 2
_ONLINE_HOURS = [0] * 7 + [1, 2, 3, 3, 4, 4, 3, 3, 3, 4, 5, 6, 7, 8, 8, 6, 3]
HOUR_WEIGHTS = {
    "store": np.array(_STORE_HOURS, dtype=float) / sum(_STORE_HOURS),
    "online": np.array(_ONLINE_HOURS, dtype=float) / sum(_ONLINE_HOURS),
}

EVENT_TYPES = ("purchase", "return", "visit", "signup", "cart_abandoned")
CART_ABANDON_RATE = 0.12  # share of online visits that leave a filled cart behind
EVENT_COLUMNS = (
    "event_id",
    "customer_id",
    "occurred_at",
    "type",
    "amount",
    "discount",
    "category",
    "channel",
)
CUSTOMER_COLUMNS = (
    "customer_id",
    "email_opt_in",
    "sms_opt_in",
    "push_opt_in",
    "birth_date",
    "signup_date",
    "country",
    "gender",
    "age",
    "loyalty_tier",
    "store_region",
)


@dataclass
class Calendar:
    """The day grid from the first signup to the reference date, with seasonal intensity.

    ``days`` (D,) datetime64[D]; ``weight`` (D,) relative activity, mean 1 over the events year;
    ``cum`` (D + 1,) its running integral in years, so a rate per year times ``cum`` differences
    is an expected count; ``utc_offset`` maps a time zone name to (D,) seconds ahead of UTC.
    """

    days: np.ndarray
    weight: np.ndarray
    cum: np.ndarray
    events_start: int
    utc_offset: dict[str, np.ndarray]

    @property
    def n_days(self) -> int:
        return len(self.days)

    def day_index(self, fractional_day: np.ndarray) -> np.ndarray:
        """Return the whole day each fractional day falls on, as an index into ``days``."""
        return np.minimum(fractional_day.astype(np.int64), self.n_days - 1)

    def to_day(self, position: np.ndarray) -> np.ndarray:
        """Map seasonal time (years, as in ``cum``) back to fractional day indexes."""
        return np.interp(position, self.cum, np.arange(self.n_days + 1))


def seasonal_weight(days: np.ndarray) -> np.ndarray:
    """Relative shopping activity per day: weekends, Black Friday, Christmas and the sales."""
    weekday = (days.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 0 = Monday
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    w = np.ones(len(days))
    w[weekday == 5] *= 1.3
    w[weekday == 6] *= 0.8
    w[(month == 12) & (day <= 23)] *= 1.6
    w[(month == 1) & (day >= 7)] *= 1.3  # January sales
    w[month == 7] *= 1.25  # summer sales
    w[month == 8] *= 0.8
    # Black Friday (fourth Friday of November) and the days up to Cyber Monday.
    first_friday = ((4 - (weekday - (day - 1))) % 7) + 1  # day of month of November's 1st Friday
    black_friday = (month == 11) & (day >= first_friday + 21) & (day <= first_friday + 24)
    w[black_friday] *= 2.5
    w[black_friday & (day == first_friday + 21)] *= 1.6
    return w


def utc_offsets(days: np.ndarray, tz_name: str) -> np.ndarray:
    """Seconds ahead of UTC at noon of each day in a time zone (daylight saving included)."""
    tz = ZoneInfo(tz_name)
    start = datetime.fromisoformat(str(days[0])).replace(hour=12, tzinfo=tz)
    offsets = [(start + timedelta(days=i)).utcoffset() for i in range(len(days))]
    return np.array([o.total_seconds() if o else 0.0 for o in offsets], dtype=np.int64)


def make_calendar() -> Calendar:
    """Build the day grid and its seasonal intensity."""
    days = np.arange(HISTORY_START, REFERENCE, dtype="datetime64[D]")
    weight = seasonal_weight(days)
    events_start = int((EVENTS_START - HISTORY_START).astype(np.int64))
    weight /= weight[events_start:].mean()
    cum = np.concatenate([[0.0], np.cumsum(weight) / DAYS_PER_YEAR])
    offsets = {tz: utc_offsets(days, tz) for tz in ("Europe/Madrid", "Europe/Lisbon")}
    return Calendar(days, weight, cum, events_start, offsets)


def make_customers(rng: np.random.Generator, n: int, cal: Calendar) -> dict[str, np.ndarray]:
    """Draw attributes and latent behaviour for ``n`` customers, in signup order.

    Latent arrays (per customer, shape (n,)): ``rate`` purchases per year while alive,
    ``lifetime`` days from the first purchase to dropout, ``spend_scale`` the gamma-gamma
    order-value scale, ``discount_affinity``, ``category_p`` (n, 5), ``channel_p`` (n, 3).
    """
    # Signups follow the seasons and grow by about half over the three years.
    growth = 1.0 + 0.5 * np.arange(cal.n_days) / cal.n_days
    p_signup = cal.weight * growth
    signup = np.sort(rng.choice(cal.n_days, size=n, p=p_signup / p_signup.sum()))

    country = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_WEIGHTS)
    region = rng.choice(len(REGIONS), size=n, p=REGION_WEIGHTS)
    online = region == REGIONS.index("online")
    # Channel mix: online-only customers never buy in store; the rest mix all three.
    base = np.where(online[:, None], [6.0, 0.0, 4.0], [3.5, 4.5, 2.0])
    channel_p = rng.dirichlet([1.0, 1.0, 1.0], size=n) * base
    channel_p /= channel_p.sum(axis=1, keepdims=True)
    category_p = rng.dirichlet(CATEGORY_WEIGHTS * 4.0, size=n)

    app_share = channel_p[:, CHANNELS.index("app")]
    email = rng.random(n) < 0.74
    sms = rng.random(n) < np.where(email, 0.42, 0.22)
    push = rng.random(n) < 0.08 + 0.85 * app_share

    # Two relations the customers report should find (`orch report customers`): customers who
    # buy with deep discounts stay for less time, and order value falls faster than purchase
    # frequency rises, so customers with few large orders are worth more than those with many
    # small ones.
    affinity = rng.beta(1.2, 3.5, size=n)
    rate = rng.gamma(0.9, 8.0 / 0.9, size=n)
    lifetime = rng.exponential(1.0, size=n) / rng.gamma(2.0, 0.25, size=n) * DAYS_PER_YEAR
    lifetime *= np.exp(-2.5 * (affinity - 0.25))
    spend = 1.0 / rng.gamma(4.0, 1.0 / 30.0, size=n) * np.clip(rate / 8.0, 0.5, 2.0) ** -1.2

    # Adults at signup; a birth date is optional in the sign-up form, the age is not.
    age_at_signup = np.minimum(18.0 + rng.gamma(2.2, 9.0, size=n), 85.0)
    birth = cal.days[signup] - np.round(age_at_signup * DAYS_PER_YEAR).astype("timedelta64[D]")

    return {
        "signup": signup,
        "country": country,
        "region": region,
        "gender": rng.choice(len(GENDERS), size=n, p=GENDER_WEIGHTS),
        "email": email,
        "sms": sms,
        "push": push,
        "birth": birth,
        "birth_known": rng.random(n) >= 0.09,
        "buyer": rng.random(n) >= 0.04,
        "rate": rate,
        "lifetime": lifetime,
        "first_delay": np.where(rng.random(n) < 0.6, 0.0, rng.exponential(12.0, size=n)),
        "spend_scale": spend,
        "visit_ratio": rng.gamma(2.0, 1.0, size=n),
        "discount_affinity": affinity,
        "category_p": category_p,
        "channel_p": channel_p,
    }


def poisson_times(
    rng: np.random.Generator, cal: Calendar, rate: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw seasonal Poisson arrivals for each customer between fractional days ``start``/``end``.

    ``rate`` (n,) is per year at average seasonality. Return (customer index, fractional day),
    both (m,), for all m arrivals.
    """
    end = np.maximum(end, start)
    c0 = np.interp(start, np.arange(cal.n_days + 1), cal.cum)
    exposure = np.interp(end, np.arange(cal.n_days + 1), cal.cum) - c0
    counts = rng.poisson(rate * exposure)
    who = np.repeat(np.arange(len(rate)), counts)
    position = c0[who] + rng.random(len(who)) * exposure[who]
    # Clip away float round-off so that no arrival leaves its customer's interval.
    return who, np.clip(cal.to_day(position), start[who], end[who])


def pick(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """Draw one index per row of the probability matrix ``p`` (m, k)."""
    cum = np.cumsum(p, axis=1)
    u = rng.random(len(p))[:, None] * cum[:, -1:]
    return np.minimum((u >= cum).sum(axis=1), p.shape[1] - 1)


def simulate_events(
    rng: np.random.Generator, cust: dict[str, np.ndarray], cal: Calendar
) -> dict[str, np.ndarray]:
    """Simulate purchases, returns and visits inside the events year.

    Returns columns of equal length m: ``customer``, ``day`` (int), ``type`` (index into
    EVENT_TYPES), ``amount``, ``discount``, ``category``, ``channel`` (indexes).
    """
    window_start, window_end = float(cal.events_start), float(cal.n_days)
    signup = cust["signup"].astype(float)
    first_day = signup + cust["first_delay"]  # the first purchase starts the lifetime
    death = first_day + cust["lifetime"]
    buyer = cust["buyer"]

    # First purchases (inside the window only), then repeat purchases while alive.
    first = np.flatnonzero(buyer & (first_day >= window_start) & (first_day < window_end))
    rate = np.where(buyer, cust["rate"], 0.0)
    lo = np.maximum(first_day, window_start)
    hi = np.minimum(death, window_end)
    repeat_who, repeat_day = poisson_times(rng, cal, rate, lo, hi)
    who = np.concatenate([first, repeat_who])
    day = cal.day_index(np.concatenate([first_day[first], repeat_day]))

    n_buy = len(who)
    discounted = rng.random(n_buy) < cust["discount_affinity"][who] * cal.weight[day] ** 0.5
    # Customers keen on discounts also take the deeper ones.
    keen = cust["discount_affinity"][who][:, None]
    level_p = DISCOUNT_WEIGHTS * np.exp(12.0 * keen * (DISCOUNT_LEVELS - DISCOUNT_LEVELS.mean()))
    discount = np.where(discounted, DISCOUNT_LEVELS[pick(rng, level_p)], 0.0)
    gross = rng.gamma(6.0, cust["spend_scale"][who])
    amount = np.maximum(np.round(gross * (1.0 - discount), 2), 1.0)
    category = pick(rng, cust["category_p"][who])
    channel = pick(rng, cust["channel_p"][who])

    # Returns: some purchases come back 1-4 weeks later, mostly in full, through web or store.
    back = rng.random(n_buy) < RETURN_RATE[category]
    r_day = day + 1 + rng.poisson(9.0, size=n_buy)
    back &= r_day < cal.n_days
    partial = rng.random(n_buy) < 0.2
    refund = np.where(partial, np.round(amount * rng.uniform(0.3, 0.7, size=n_buy), 2), amount)
    r_channel = np.where(rng.random(n_buy) < 0.5, CHANNELS.index("store"), CHANNELS.index("web"))

    # Visits (browsing on web or app) from signup to dropout, buyers and non-buyers alike.
    visit_rate = np.where(
        buyer, cust["rate"] * cust["visit_ratio"], rng.gamma(1.5, 2.0, size=len(buyer))
    )
    v_who, v_day = poisson_times(
        rng, cal, visit_rate, np.maximum(signup, window_start), np.minimum(death, window_end)
    )
    n_visit = len(v_who)
    v_category = pick(rng, cust["category_p"][v_who])
    v_channel = pick(rng, cust["channel_p"][v_who] * [1.0, 0.0, 1.0] + [1e-9, 0.0, 0.0])

    return {
        "customer": np.concatenate([who, who[back], v_who]),
        "day": np.concatenate([day, r_day[back], cal.day_index(v_day)]),
        "type": np.repeat([0, 1, 2], [n_buy, int(back.sum()), n_visit]),
        "amount": np.concatenate([amount, -refund[back], np.zeros(n_visit)]),
        "discount": np.concatenate([discount, discount[back], np.zeros(n_visit)]),
        "category": np.concatenate([category, category[back], v_category]),
        "channel": np.concatenate([channel, r_channel[back], v_channel]),
    }


def journey_events(
    rng: np.random.Generator, ev: dict[str, np.ndarray], cust: dict[str, np.ndarray], cal: Calendar
) -> dict[str, np.ndarray]:
    """The events journeys start on: a ``signup`` on each sign-up day inside the events year,
    and a ``cart_abandoned`` after some online visits. Drawn from their own generator after the
    others, so adding them left the purchases, returns and visits as they were."""
    joined = np.flatnonzero(cust["signup"] >= cal.events_start)
    visits = np.flatnonzero(ev["type"] == EVENT_TYPES.index("visit"))
    carts = visits[rng.random(len(visits)) < CART_ABANDON_RATE]
    n_join, n_cart = len(joined), len(carts)
    web = CHANNELS.index("web")
    return {
        "customer": np.concatenate([joined, ev["customer"][carts]]),
        "day": np.concatenate([cust["signup"][joined], ev["day"][carts]]),
        "type": np.repeat(
            [EVENT_TYPES.index("signup"), EVENT_TYPES.index("cart_abandoned")], [n_join, n_cart]
        ),
        "amount": np.zeros(n_join + n_cart),
        "discount": np.zeros(n_join + n_cart),
        "category": np.concatenate([pick(rng, cust["category_p"][joined]), ev["category"][carts]]),
        "channel": np.concatenate([np.full(n_join, web), ev["channel"][carts]]),
    }


def timestamps(
    rng: np.random.Generator, ev: dict[str, np.ndarray], cust: dict[str, np.ndarray], cal: Calendar
) -> np.ndarray:
    """Give each event a local time of day by channel and convert it to UTC seconds since epoch."""
    m = len(ev["day"])
    store = ev["channel"] == CHANNELS.index("store")
    hour = np.empty(m, dtype=np.int64)
    hour[store] = rng.choice(24, size=int(store.sum()), p=HOUR_WEIGHTS["store"])
    hour[~store] = rng.choice(24, size=int((~store).sum()), p=HOUR_WEIGHTS["online"])
    local = hour * 3600 + rng.integers(0, 3600, size=m)
    lisbon = cust["country"][ev["customer"]] == COUNTRIES.index("PT")
    offset = np.where(
        lisbon,
        cal.utc_offset["Europe/Lisbon"][ev["day"]],
        cal.utc_offset["Europe/Madrid"][ev["day"]],
    )
    day_start = cal.days[ev["day"]].astype("datetime64[s]").astype(np.int64)
    return day_start + local - offset


def loyalty_tiers(cust: dict[str, np.ndarray], ev: dict[str, np.ndarray]) -> np.ndarray:
    """Tier each customer by net spend over the events year: 0 bronze, 1 silver, 2 gold."""
    spend = np.bincount(ev["customer"], weights=ev["amount"], minlength=len(cust["signup"]))
    return np.searchsorted(TIER_THRESHOLDS, spend, side="right")


def ages_on(reference: np.datetime64, birth: np.ndarray) -> np.ndarray:
    """Whole years between each birth date and the reference date."""
    ref = reference.astype("datetime64[D]").item()
    year = birth.astype("datetime64[Y]").astype(np.int64) + 1970
    month = birth.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (birth - birth.astype("datetime64[M]")).astype(np.int64) + 1
    before = (month > ref.month) | ((month == ref.month) & (day > ref.day))
    return ref.year - year - before


def write_customers(
    path: Path, cust: dict[str, np.ndarray], tier: np.ndarray, cal: Calendar
) -> int:
    """Write customers.csv; return the number of rows."""
    n = len(cust["signup"])
    flag = np.array(["false", "true"])
    birth = np.where(cust["birth_known"], cust["birth"].astype(str), "")
    tiers = np.array(["bronze", "silver", "gold"])
    columns = [
        [f"C{i:06d}" for i in range(1, n + 1)],
        flag[cust["email"].astype(int)],
        flag[cust["sms"].astype(int)],
        flag[cust["push"].astype(int)],
        birth,
        cal.days[cust["signup"]].astype(str),
        np.array(COUNTRIES)[cust["country"]],
        np.array(GENDERS)[cust["gender"]],
        ages_on(REFERENCE, cust["birth"]).astype(str),
        tiers[tier],
        np.array(REGIONS)[cust["region"]],
    ]
    return _write_csv(path, CUSTOMER_COLUMNS, columns)


def write_events(path: Path, ev: dict[str, np.ndarray], utc: np.ndarray) -> int:
    """Write events.csv sorted by time; return the number of rows."""
    order = np.lexsort((ev["type"], ev["customer"], utc))
    m = len(order)
    when = np.datetime_as_string(utc[order].astype("datetime64[s]"), unit="s")
    columns = [
        [f"E{i:07d}" for i in range(1, m + 1)],
        [f"C{c + 1:06d}" for c in ev["customer"][order]],
        np.char.add(when, "Z"),
        np.array(EVENT_TYPES)[ev["type"][order]],
        [f"{a:.2f}" for a in ev["amount"][order]],
        [f"{d:.2f}" for d in ev["discount"][order]],
        np.array(CATEGORIES)[ev["category"][order]],
        np.array(CHANNELS)[ev["channel"][order]],
    ]
    return _write_csv(path, EVENT_COLUMNS, columns)


def _write_csv(path: Path, header: tuple[str, ...], columns: Sequence[Iterable[object]]) -> int:
    rows = list(zip(*columns, strict=True))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return len(rows)


def generate(seed: int, n_customers: int, out: Path) -> dict[str, int]:
    """Write customers.csv and events.csv (and copy plan.yaml) to ``out``; return row counts."""
    rng = np.random.default_rng(seed)
    cal = make_calendar()
    cust = make_customers(rng, n_customers, cal)
    ev = simulate_events(rng, cust, cal)
    utc = timestamps(rng, ev, cust, cal)
    extra_rng = np.random.default_rng([seed, 1])
    extra = journey_events(extra_rng, ev, cust, cal)
    extra_utc = timestamps(extra_rng, extra, cust, cal)
    ev = {k: np.concatenate([ev[k], extra[k]]) for k in ev}
    utc = np.concatenate([utc, extra_utc])
    out.mkdir(parents=True, exist_ok=True)
    counts = {
        "customers.csv": write_customers(out / "customers.csv", cust, loyalty_tiers(cust, ev), cal),
        "events.csv": write_events(out / "events.csv", ev, utc),
    }
    plan = HERE / "plan.yaml"
    if plan.exists() and out.resolve() != HERE:
        shutil.copyfile(plan, out / "plan.yaml")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--customers", type=int, default=5000, help="how many (default 5000)")
    parser.add_argument("--out", type=Path, default=HERE, help="directory (default examples/)")
    args = parser.parse_args(argv)
    if args.customers < 1:
        parser.error("--customers must be at least 1")
    for name, rows in generate(args.seed, args.customers, args.out).items():
        print(f"{args.out / name}: {rows} rows")


if __name__ == "__main__":
    main()
