"""A synthetic customer world whose exact expected uplift is known, stepped one day at a time.

Hidden personas draw each customer's daily purchase rate (gamma around the persona's) and order
value (lognormal); some customers churned during the ``history_days`` before start, keeping
``churn_factor`` of their rate from then on. The history has no campaigns; a customer who signed
up within it made a first order that day. Every day each customer buys at most once, with

    probability p = clip(rate x season(day) + sum of active offers' lift(day), 0, 0.95)

and pays ``value x noise x (1 - discount)``, ``noise`` lognormal with mean 1 and ``discount``
the largest one of the offers active that day. A send of action ``a`` on day ``t`` opens an
offer for ``horizon_a`` days: its lift on day ``t + s`` is

    lift[persona, a] x exp(-per_contact x contacts on days t - F .. t - 1) x w_a[s],
    w_a[s] = decay**s / sum(decay**u for u < horizon_a),   s = 0 .. horizon_a - 1,

so ``lift`` is the total extra purchase probability over the horizon before fatigue and
clipping (``F`` is ``fatigue.days``; the contacts are the sends registered by :meth:`World.step`,
so control customers are never fatigued). Overlapping offers add their lifts, each on its own
kernel, and the customer pays with the best code. The lift table is the one of the send day:
from ``drift_day`` on, ``after_drift`` replaces it, for new sends only.

:meth:`World.expected_incremental` is the exact expectation of what :meth:`World.step` draws:
revenue over the new offer's horizon with the send minus without it (nothing else sent), minus
the treatment's cost. Later days are the same with or without the send, so they cancel.
Shapes: ``n`` customers (or the rows asked for), ``A`` action labels, ``H`` the longest horizon.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np

from orchestrator.engine.actions import NO_SEND_LABEL
from simulations.scenario import Scenario, load_scenario, plan_labels

P_MAX = 0.95
__all__ = ["NO_SEND_LABEL", "P_MAX", "World", "load_scenario"]


class World:
    """The customers of a scenario, their hidden state, and the day they are at."""

    def __init__(
        self, scenario: Scenario, *, customers: int | None = None, seed: int | None = None
    ) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        n = scenario.customers if customers is None else customers
        plan = scenario.plan_model()
        self.persona_ids = scenario.persona_ids()
        self.customer_ids: list[str] = [f"S{i:06d}" for i in range(n)]
        self._row_of = {cid: i for i, cid in enumerate(self.customer_ids)}
        self._labels = plan_labels(plan)
        self._col_of = {label: j for j, label in enumerate(self._labels)}
        self._init_actions(plan)
        self._init_population(n, np.random.default_rng([self.seed, 0]))
        self._init_history(np.random.default_rng([self.seed, 1]))
        hbuf = int(self._horizon.max(initial=1))
        f = scenario.fatigue.days
        # Rings indexed [day % length, customer], so that one day's values are contiguous.
        self._lift_sum = np.zeros((hbuf, n))  # (H, n) sum of the active offers' lifts
        self._discount_on = np.zeros((hbuf, n))  # (H, n) largest active discount
        self._offer_until = np.full(n, -1, dtype=np.int64)  # last day with an offer active
        self._contacts = np.zeros((f + 1, n), dtype=np.int16)  # (F + 1, n) sends per day
        self._recent = np.zeros(n, dtype=np.int64)  # sends on the F days before today
        self._scratch = _Scratch()
        self._t = 0  # the next day to step, as an offset from scenario.start

    # --- set-up -------------------------------------------------------------------------

    def _init_actions(self, plan: Any) -> None:
        s = self.scenario
        costs, discounts, horizons = [], [], []
        for c in plan.campaigns:
            for t in c.treatments:
                eff = s.effects[f"{c.id}/{t.id}"]
                feature = t.features.get("discount", 0.0)
                plan_discount = float(feature) if isinstance(feature, int | float) else 0.0
                costs.append(t.cost)
                discounts.append(plan_discount if eff.discount is None else eff.discount)
                horizons.append(c.measurement_days if eff.horizon is None else eff.horizon)
        self._cost = np.array(costs, dtype=np.float64)  # (A,)
        self._discount = np.array(discounts, dtype=np.float64)  # (A,)
        self._horizon = np.array(horizons, dtype=np.int64)  # (A,)
        hbuf = int(self._horizon.max(initial=1))
        steps = np.arange(hbuf)
        kernel = np.where(steps < self._horizon[:, None], s.kernel_decay ** steps[None, :], 0.0)
        self._kernel = kernel / kernel.sum(axis=1, keepdims=True)  # (A, H), rows sum to 1
        self._kernel_decay = s.kernel_decay
        lift = np.zeros((2, len(s.personas), len(self._labels)))  # (before/after drift, P, A)
        for j, label in enumerate(self._labels):
            for p, pid in enumerate(self.persona_ids):
                lift[:, p, j] = s.effects[label].lift.get(pid, 0.0)
                lift[1, p, j] = s.after_drift.get(label, {}).get(pid, lift[0, p, j])
        self._lift = lift

    def _init_population(self, n: int, rng: np.random.Generator) -> None:
        s = self.scenario
        shares = np.array([p.share for p in s.personas])
        self.persona = rng.choice(len(shares), size=n, p=shares / shares.sum())  # (n,) hidden
        self._rate = np.zeros(n)  # (n,) daily purchase probability before any churn
        self._value = np.zeros(n)  # (n,) mean order value
        self._signup = np.zeros(n, dtype=np.int64)  # (n,) day offset of the signup (<= 0)
        self._churn = np.full(n, np.iinfo(np.int64).max)  # (n,) day offset of the churn
        self._attributes: dict[str, np.ndarray] = {}
        plan_attributes = s.plan_model().attributes
        for name, kind in plan_attributes.items():
            self._attributes[name] = np.zeros(n, dtype=object if kind == "string" else float)
        cats = _union([list(p.categories) for p in s.personas])
        chans = _union([list(p.channels) for p in s.personas])
        self._categories, self._channels = cats, chans
        self._cat_cum = np.ones((len(s.personas), max(len(cats), 1)))  # (P, K) cumulative mix
        self._chan_cum = np.ones((len(s.personas), max(len(chans), 1)))
        for p, spec in enumerate(s.personas):
            idx = np.flatnonzero(self.persona == p)
            k = idx.size
            shape = spec.rate_shape
            rate = rng.gamma(shape, spec.purchase_rate / shape, k)
            self._rate[idx] = np.minimum(rate, s.max_rate)
            sd = spec.value_sd
            self._value[idx] = spec.order_value * np.exp(sd * rng.standard_normal(k) - sd**2 / 2)
            self._signup[idx] = -rng.integers(spec.tenure[0], spec.tenure[1] + 1, k)
            near, far = spec.churn_window or (0, s.history_days)
            churn_at = -rng.integers(near, far + 1, k)
            churned = rng.random(k) < spec.churned_share
            self._churn[idx[churned]] = np.maximum(churn_at, self._signup[idx])[churned]
            for name, attr in spec.attributes.items():
                self._attributes[name][idx] = _draw_attribute(rng, attr, k)
            for mix, names, cum in ((spec.categories, cats, self._cat_cum),
                                    (spec.channels, chans, self._chan_cum)):  # fmt: skip
                if mix:
                    cum[p] = np.cumsum([mix.get(name, 0.0) for name in names])
        self._churned = self._churn <= 0  # (n,)
        self._rate_now = np.where(self._churned, self._rate * s.churn_factor, self._rate)

    def _init_history(self, rng: np.random.Generator) -> None:
        """Draw the purchases of the ``history_days`` before start (no campaigns then)."""
        s = self.scenario
        share = np.array([p.discount_share for p in s.personas])[self.persona]  # (n,)
        parts: list[tuple[int, np.ndarray, np.ndarray]] = []
        for d in range(-s.history_days, 0):
            rate = np.where(self._churn <= d, self._rate * s.churn_factor, self._rate)
            p = rate * self._season(np.array([d]))[0] * (self._signup <= d)
            # A customer exists because of a first order: one on the signup day.
            buy = np.flatnonzero((rng.random(p.size) < p) | (self._signup == d))
            discounted = rng.random(buy.size) < share[buy]
            disc = np.where(discounted, rng.choice(s.history_discounts, buy.size), 0.0)
            parts.append((d, buy, disc))
        self._history = parts

    # --- public queries -----------------------------------------------------------------

    @property
    def today(self) -> date:
        """The next day to step (and the day whose sends are valued)."""
        return self.scenario.start + timedelta(days=self._t)

    def labels(self) -> list[str]:
        """Return every action label ``campaign/treatment`` of the plan (not "send nothing")."""
        return list(self._labels)

    def rows_of(self, customer_ids: Sequence[str]) -> np.ndarray:
        """Return the rows (n,) int64 of the given customer ids."""
        try:
            return np.fromiter((self._row_of[c] for c in customer_ids), np.int64, len(customer_ids))
        except KeyError as exc:
            raise ValueError(f"unknown customer id {exc.args[0]!r}") from None

    def customer_rows(self) -> list[dict[str, Any]]:
        """Return one row per customer: id and observable attributes, for the import."""
        names = list(self._attributes)
        kinds = self.scenario.plan_model().attributes
        cols = [_column(self._attributes[a], kinds[a]) for a in names]
        return [
            {"customer_id": cid, **{a: col[i] for a, col in zip(names, cols, strict=True)}}
            for i, cid in enumerate(self.customer_ids)
        ]

    def history_events(self) -> list[dict[str, Any]]:
        """Return the purchases before start (same shape as :meth:`step`'s events)."""
        rng = np.random.default_rng([self.seed, 3])
        events: list[dict[str, Any]] = []
        for d, buy, disc in self._history:
            events += self._events(d, buy, disc, rng)
        return events

    def expected_incremental(
        self, day: date, rows: np.ndarray, labels: Sequence[str]
    ) -> np.ndarray:
        """Return the exact expected incremental value (n, A) of sending each label to each row
        on ``day`` versus sending nothing, given the current state: revenue gained over the
        offer's horizon (net of every discount), minus its cost. "(send nothing)" is 0.
        """
        t = self._check_day(day)
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.array([self._label_col(label) for label in labels], dtype=np.int64)
        real = np.flatnonzero(cols >= 0)
        if real.size == cols.size:
            return self._incremental(t, rows, cols)
        out = np.zeros((rows.size, cols.size))
        if real.size:
            out[:, real] = self._incremental(t, rows, cols[real])
        return out

    def true_value_of_sends(
        self, day: date, customer_ids: Sequence[str], labels: Sequence[str]
    ) -> np.ndarray:
        """Return the expected incremental value (k,) of each given send, before registering."""
        t = self._check_day(day)
        rows = self.rows_of(customer_ids)
        cols = np.array([self._label_col(label) for label in labels], dtype=np.int64)
        out = np.zeros(rows.size)
        for j in np.unique(cols[cols >= 0]):
            sel = np.flatnonzero(cols == j)
            out[sel] = self._incremental(t, rows[sel], np.array([j]))[:, 0]
        return out

    def step(
        self, day: date, customer_ids: Sequence[str], labels: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Register ``day``'s sends (test group only; at most one per customer), then draw and
        return every customer's purchases that day. Days must be stepped in order.
        """
        t = self._check_day(day)
        if len(customer_ids) != len(labels):
            raise ValueError("customer_ids and labels must have the same length")
        rows = self.rows_of(customer_ids)
        cols = np.array([self._label_col(label) for label in labels], dtype=np.int64)
        rows, cols = rows[cols >= 0], cols[cols >= 0]
        if np.unique(rows).size != rows.size:
            raise ValueError(f"{day}: a customer got two sends on the same day")
        self._register(t, rows, cols)

        rng = np.random.default_rng([self.seed, 2, t])
        p, disc = self._odds_today()
        buy = np.flatnonzero(rng.random(p.size) < p)
        # Every customer's noise is drawn, bought or not, so that a send changes nothing else.
        events = self._events(t, buy, disc[buy], rng, whole=True)
        events += self._entry_events(t)

        # Move to the next day: free today's ring slots, slide the fatigue window.
        today, f1 = t % self._lift_sum.shape[0], self._contacts.shape[0]
        self._lift_sum[today] = 0.0
        self._discount_on[today] = 0.0
        self._recent += self._contacts[t % f1]
        self._t = t + 1
        self._recent -= self._contacts[self._t % f1]
        self._contacts[self._t % f1] = 0
        return events

    # --- internals ----------------------------------------------------------------------

    def _odds_today(self) -> tuple[np.ndarray, np.ndarray]:
        """Return every customer's purchase probability and discount (n,) on the current day."""
        t = self._t
        today = t % self._lift_sum.shape[0]
        base = self._rate_now * self._season(np.array([t]))[0]
        return np.clip(base + self._lift_sum[today], 0, P_MAX), self._discount_on[today].copy()

    def _register(self, t: int, rows: np.ndarray, cols: np.ndarray) -> None:
        """Open the offers of actions ``cols`` (k,) to distinct ``rows`` (k,) on day ``t``."""
        hbuf = self._lift_sum.shape[0]
        gain = self._lift[self._epoch(t), self.persona[rows], cols] * self._fatigue(rows)
        for j in np.unique(cols):
            sel = cols == j
            r, h = rows[sel], int(self._horizon[j])
            ring = ((t + np.arange(h)) % hbuf)[:, None]  # (h, 1)
            self._lift_sum[ring, r] += self._kernel[j, :h, None] * gain[sel]
            self._discount_on[ring, r] = np.maximum(self._discount_on[ring, r], self._discount[j])
            self._offer_until[r] = np.maximum(self._offer_until[r], t + h - 1)
        self._contacts[t % self._contacts.shape[0], rows] += 1

    def _check_day(self, day: date) -> int:
        if day != self.today:
            raise ValueError(f"the world is at {self.today}, not {day}: step days in order")
        return self._t

    def _label_col(self, label: str) -> int:
        if label == NO_SEND_LABEL:
            return -1
        try:
            return self._col_of[label]
        except KeyError:
            raise ValueError(f"unknown action label {label!r}") from None

    def _epoch(self, t: int) -> int:
        drift = self.scenario.drift_day
        return int(drift is not None and t >= drift)

    def _season(self, days: np.ndarray) -> np.ndarray:
        """Return the base-rate multiplier (k,) of day offsets (k,); it averages 1 over a week."""
        s = self.scenario.seasonality
        weekday = (self.scenario.start.weekday() + days) % 7
        return 1.0 + s.weekly * np.cos(2 * np.pi * (weekday - s.peak_weekday) / 7)

    def _fatigue(self, rows: np.ndarray) -> np.ndarray:
        return np.exp(-self.scenario.fatigue.per_contact * self._recent[rows])

    def _window(self, rows: np.ndarray, t: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the unclipped probability and the discount (h, k) on days t .. t + h - 1."""
        ring = (t + np.arange(h)) % self._lift_sum.shape[0]
        if rows.size == self._lift_sum.shape[1] and (rows == np.arange(rows.size)).all():
            lift, disc = self._lift_sum[ring], self._discount_on[ring]  # everyone, in order
        else:
            lift = np.take(self._lift_sum, rows, axis=1)[ring]
            disc = np.take(self._discount_on, rows, axis=1)[ring]
        base = self._season(t + np.arange(h))[:, None] * self._rate_now[rows]
        return base + lift, disc

    def _incremental(self, t: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Return the expected incremental value (n, a) of actions ``cols`` (a,) for ``rows``.

        While p + lift stays in [0, P_MAX], revenue is linear in p and in the lift, so sums over
        a horizon are running sums read at its length; only the pairs where clipping may bind
        are summed day by day. One action at a time, so that the (n,) vectors stay in cache.
        """
        if rows.size == 0:
            return np.zeros((0, cols.size))
        hbuf = self._lift_sum.shape[0]
        h, d, cost = self._horizon[cols], self._discount[cols], self._cost[cols]  # (a,)
        kernel = self._kernel[cols]  # (a, H)
        lift = self._lift[self._epoch(t)][:, cols].T  # (a, P) before fatigue
        persona, rate, value = self.persona[rows], self._rate_now[rows], self._value[rows]
        fatigue = self._fatigue(rows)  # (n,)
        season = self._season(t + np.arange(hbuf))  # (H,)
        cum_season = np.concatenate([[0.0], np.cumsum(season)])  # (H + 1,)
        low, high = rate * season.min(), rate * season.max()  # (n,) bounds of p over H days
        active = np.flatnonzero(self._offer_until[rows] >= t)
        if active.size > rows.size // 3:
            active = np.arange(rows.size)  # cheaper than picking columns; zeros are harmless
        where = np.full(rows.size, -1)
        where[active] = np.arange(active.size)
        p_on, disc_on = self._window(rows[active], t, hbuf)  # (H, k) for rows with offers
        if active.size:
            low[active], high[active] = p_on.min(axis=0), p_on.max(axis=0)
            excess = _Excess(p_on, disc_on, self._kernel_decay, self._scratch)
        bad = (low < 0) | (high > P_MAX)  # (n,) clipping even without the send
        room_down, room_up = low / fatigue, (P_MAX - high) / fatigue  # (n,)
        value_active, rate_value = value[active], rate * value
        out = np.empty((cols.size, rows.size))  # (a, n)
        for a in range(cols.size):
            gain = lift[a][persona] * fatigue  # (n,) total lift of the send
            row = out[a]
            if active.size < rows.size:
                # No offer active: p sums to rate x cum_season[h] over the horizon and nothing
                # is discounted yet: the send gains value x [(1 - d) gain - d sum of p] - cost.
                np.multiply(gain, value, out=row)
                row *= 1 - d[a]
                row -= (d[a] * cum_season[h[a]]) * rate_value
                row -= cost[a]
            if active.size:
                send = excess.gain_over_value(int(h[a]), float(d[a]), gain[active], kernel[a, 0])
                send *= value_active
                send -= cost[a]
                row[active] = send
            # The kernel's first day carries an offer's largest daily lift, so p + lift stays
            # in [0, P_MAX] on every day of the horizon if it does at the bounds of p.
            first = lift[a] * kernel[a, 0]  # (P,)
            clip = bad
            if first.min() < 0:
                clip = clip | (first[persona] < -room_down)
            if first.max() > room_up.min():
                clip = clip | (first[persona] > room_up)
            sel = np.flatnonzero(clip)
            if sel.size:
                p, disc = self._window_of(rate[sel], where[sel], p_on, disc_on, t, int(h[a]))
                lifted = np.clip(p + kernel[a, : int(h[a]), None] * gain[sel], 0, P_MAX)
                with_send = (lifted * (1 - np.maximum(disc, d[a]))).sum(axis=0)
                without = (np.clip(p, 0, P_MAX) * (1 - disc)).sum(axis=0)
                row[sel] = value[sel] * (with_send - without) - cost[a]
        return out.T

    def _window_of(
        self,
        rate: np.ndarray,
        on: np.ndarray,
        p_on: np.ndarray,
        disc_on: np.ndarray,
        t: int,
        h: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return probability and discount (h, k) of k rows of rates ``rate`` (k,): from
        ``p_on`` and ``disc_on`` (H, k_on) at columns ``on`` (k,), or none active where -1."""
        p = self._season(t + np.arange(h))[:, None] * rate  # (h, k)
        disc = np.zeros_like(p)
        has = on >= 0
        p[:, has], disc[:, has] = p_on[:h, on[has]], disc_on[:h, on[has]]
        return p, disc

    def _entry_events(self, t: int) -> list[dict[str, Any]]:
        """The scenario's journey-entry events of day ``t`` (own stream: purchases unchanged)."""
        kinds = sorted(self.scenario.entry_events)
        if not kinds:
            return []
        rng = np.random.default_rng([self.seed, 3, t])
        day = self.scenario.start + timedelta(days=t)
        stamp, iso = day.strftime("%Y%m%d"), day.isoformat()
        out: list[dict[str, Any]] = []
        for kind in kinds:
            hit = np.flatnonzero(
                rng.random(len(self.customer_ids)) < self.scenario.entry_events[kind]
            )
            for i in hit.tolist():
                cid = self.customer_ids[i]
                out.append(
                    {
                        "event_id": f"{cid}-{kind}-{stamp}",
                        "customer_id": cid,
                        "occurred_at": f"{iso}T12:00:00+00:00",
                        "type": kind,
                        "amount": 0.0,
                        "discount": 0.0,
                        "category": None,
                        "channel": "web",
                    }
                )
        return out

    def _events(
        self,
        t: int,
        buy: np.ndarray,
        disc: np.ndarray,
        rng: np.random.Generator,
        *,
        whole: bool = False,
    ) -> list[dict[str, Any]]:
        """Return the purchase events of rows ``buy`` (k,) on day offset ``t`` at discounts
        ``disc`` (k,); ``whole`` draws the noise of all n customers and keeps the buyers'."""
        noise = self.scenario.amount_noise
        k = buy.size
        m = len(self.customer_ids) if whole else k
        pick = buy if whole else np.arange(k)
        z, u_cat, u_chan = rng.standard_normal(m)[pick], rng.random(m)[pick], rng.random(m)[pick]
        seconds = rng.integers(8 * 3600, 22 * 3600, m)[pick]
        amount = self._value[buy] * np.exp(noise * z - noise**2 / 2) * (1 - disc)
        who = self.persona[buy]
        cat = (u_cat[:, None] > self._cat_cum[who]).sum(axis=1)
        chan = (u_chan[:, None] > self._chan_cum[who]).sum(axis=1)
        day = self.scenario.start + timedelta(days=t)
        stamp, iso = day.strftime("%Y%m%d"), day.isoformat()
        out: list[dict[str, Any]] = []
        for i in range(k):
            cid, sec = self.customer_ids[buy[i]], int(seconds[i])
            out.append(
                {
                    "event_id": f"{cid}-{stamp}",  # at most one purchase a day per customer
                    "customer_id": cid,
                    "occurred_at": f"{iso}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}"
                    "+00:00",
                    "type": "purchase",
                    "amount": round(float(amount[i]), 2),
                    "discount": float(disc[i]),
                    "category": _pick(self._categories, int(cat[i])),
                    "channel": _pick(self._channels, int(chan[i])),
                }
            )
        return out


class _Scratch:
    """A buffer kept between calls: fresh large arrays cost page faults on every call."""

    def __init__(self) -> None:
        self._buffer = np.empty(0)

    def get(self, shape: tuple[int, ...]) -> np.ndarray:
        size = int(np.prod(shape))
        if self._buffer.size < size:
            self._buffer = np.empty(size)
        return self._buffer[:size].reshape(shape)


class _Excess:
    """Running sums over the next H days of rows with active offers, for linear revenue.

    A send of discount u pays 1 - max(D, u) = (1 - u) - max(D - u, 0) where D (H, k) is the
    best active discount; every active offer began before today, so D never rises and D > u
    on a prefix of the days: the excess is a difference of running sums at its end.
    """

    def __init__(self, p: np.ndarray, disc: np.ndarray, decay: float, scratch: _Scratch) -> None:
        hbuf, k = p.shape
        self.k, self.p, self.disc = k, p, disc
        self.decay = decay ** np.arange(hbuf)  # kernel[a, s] = kernel[a, 0] x decay[s]
        self.cum_decay = np.concatenate([[0.0], np.cumsum(self.decay)])  # (H + 1,)
        paid = np.clip(p, 0, P_MAX) * (1 - disc)
        sums = scratch.get((4, hbuf + 1, k))  # running sums of p, p paid, p x D, decay x D
        sums[:, 0] = 0.0
        for s in range(hbuf):  # day by day: numpy's cumsum along axis 0 is slow here
            np.add(sums[0, s], p[s], out=sums[0, s + 1])
            np.add(sums[1, s], paid[s], out=sums[1, s + 1])
            sums[2, s + 1] = sums[2, s] + p[s] * disc[s]
            sums[3, s + 1] = sums[3, s] + self.decay[s] * disc[s]
        self.sums = sums
        self._cache: dict[tuple[int, float], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._beats: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def gain_over_value(self, h: int, u: float, gain: np.ndarray, first: float) -> np.ndarray:
        """Return (k,) revenue with a send of lift ``gain`` (k,), discount u, horizon h,
        minus revenue without it, per unit of order value."""
        s = self.sums
        out = (1 - u) * (s[0, h] + gain) - s[1, h]
        over, base, kern = self._excess(h, u)
        out[over] -= base + first * gain[over] * kern
        return out

    def _excess(self, h: int, u: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return rows where an active code beats u, and their sums of p x max(D - u, 0) and
        decay x max(D - u, 0) over the horizon."""
        key = (h, u)
        if key not in self._cache:
            if u not in self._beats:
                over = np.flatnonzero(self.disc[0] > u)  # D is largest today
                self._beats[u] = (over, (self.disc[:, over] > u).sum(axis=0))  # days D > u
            over, beats = self._beats[u]
            end = np.minimum(h, beats)
            flat = self.sums.reshape(4, -1)
            at = end * self.k + over
            base = flat[2, at] - u * flat[0, at]
            kern = flat[3, at] - u * self.cum_decay[end]
            self._cache[key] = (over, base, kern)
        return self._cache[key]


def _union(lists: list[list[str]]) -> list[str]:
    out: list[str] = []
    for names in lists:
        out += [name for name in names if name not in out]
    return out


def _pick(names: list[str], i: int) -> str | None:
    return names[min(i, len(names) - 1)] if names else None


def _draw_attribute(rng: np.random.Generator, spec: Any, k: int) -> np.ndarray:
    """Draw k values of one attribute: bool probability, [mean, sd, (min, max)], or a mix."""
    if isinstance(spec, dict):
        names = list(spec)
        return np.array(names, dtype=object)[rng.choice(len(names), k, p=list(spec.values()))]
    if isinstance(spec, list):
        lo, hi = (spec[2], spec[3]) if len(spec) == 4 else (-np.inf, np.inf)
        return np.clip(np.round(rng.normal(spec[0], spec[1], k)), lo, hi)
    return (rng.random(k) < spec).astype(float)


def _column(values: np.ndarray, kind: str) -> list[Any]:
    if kind == "bool":
        return [bool(v) for v in values]
    if kind == "number":
        return [float(v) for v in values]
    return list(values)
