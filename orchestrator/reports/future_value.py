"""`orch report customers`: predicted future value by layer, and what separates high from low.

Each customer who bought has a predicted future value (``expected_value``: BG/NBD purchases times
the Gamma-Gamma order value over the refresh's horizon). The report groups customers by any
layers (``--by``): a computed feature, an attribute, a segment, or a *band*. A band cuts a number
into named ranges: ``discount_band`` (the customer's mean discount: none, small, medium, deep) and
``order_value_band`` (quintiles of the mean order value) are built in, and the plan's
``settings.bands`` adds or redefines bands. Per layer: customers, their share, the mean future
value with its 95% interval (normal approximation of the mean), and the total.

What separates high from low future value: a shallow regression tree (scikit-learn) grown on one
random half of the customers and *judged on the other*, so a leaf's value and interval are not
flattered by the search that found it (the persona report's honesty rule). Its candidates are the
attributes, the segments and the behaviour features; the value model's own inputs and outputs
(recency, frequency, p_alive, expected purchases...) are left out by default: that they predict
the value is how the value is computed, not news.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from orchestrator.errors import InputError
from orchestrator.plan import BandSpec
from orchestrator.reports.data import (
    UNKNOWN,
    available_fields,
    customer_columns,
    label_values,
)

Z95 = 1.959963984540054
VALUE = "expected_value"
# The value model's inputs and outputs: they predict the value by construction.
MODEL_FIELDS = (
    "expected_value",
    "expected_purchases",
    "p_alive",
    "churn_risk",
    "p_buy_7d",
    "p_buy_30d",
    "days_to_next_purchase",
    "recency_days",
    "frequency",
    "monetary",
    "tenure_days",
    "r_score",
    "f_score",
    "m_score",
    "rfm_cell",
    "next_category_confidence",
)
DEFAULT_BANDS: dict[str, BandSpec] = {
    "discount_band": BandSpec(
        field="mean_discount",
        edges=[0.0, 0.1, 0.2],
        labels=["none", "small (≤ 10%)", "medium (10-20%)", "deep (> 20%)"],
    ),
    "order_value_band": BandSpec(field="mean_order_value"),
}
TREE_DEPTH = 3
MIN_LEAF = 100


@dataclass(frozen=True)
class LayerRow:
    labels: dict[str, str]
    customers: int
    share: float
    mean: float
    ci_low: float
    ci_high: float
    total: float


@dataclass(frozen=True)
class Leaf:
    rule: str
    customers: int  # in the judging half
    mean: float
    ci_low: float
    ci_high: float


@dataclass
class FutureValueReport:
    as_of: date | None
    horizon_days: int | None
    customers: int
    by: list[str]
    rows: list[LayerRow]
    overall: LayerRow
    tree: list[Leaf] = field(default_factory=list)
    tree_features: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def clean(d: dict[str, Any]) -> dict[str, Any]:  # JSON has no NaN
            return {
                k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in d.items()
            }

        def row(r: LayerRow) -> dict[str, Any]:
            return clean({**r.labels, **{k: v for k, v in r.__dict__.items() if k != "labels"}})

        return {
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "horizon_days": self.horizon_days,
            "customers": self.customers,
            "by": self.by,
            "overall": row(self.overall),
            "rows": [row(r) for r in self.rows],
            "tree": [clean(dict(leaf.__dict__)) for leaf in self.tree],
            "tree_features": self.tree_features,
            "notes": self.notes,
        }


def band_codes(values: np.ndarray, band: BandSpec) -> tuple[np.ndarray, list[str]]:
    """Codes and labels of a number cut by a band: its edges, or quintiles without them.

    A value ``v`` falls in bin ``i`` when ``edges[i-1] < v <= edges[i]``; NaN is ``unknown``.

    >>> band_codes(np.array([0.0, 0.05, 0.3, np.nan]), BandSpec(field="d", edges=[0.0, 0.1]))
    (array([0, 1, 2, 3]), ['≤ 0', '0 – 0.1', '> 0.1', 'unknown'])
    """
    if band.edges is None:
        codes, labels, _ = label_values(pa.array(values, pa.float64(), from_pandas=True), "number")
        return codes, labels
    edges = np.asarray(band.edges, dtype=np.float64)
    codes = np.searchsorted(edges, values, side="left")
    labels = list(band.labels) if band.labels else _edge_labels(band.edges)
    codes = np.where(np.isnan(values), len(labels), codes)
    return codes.astype(np.int64), [*labels, UNKNOWN]


def _edge_labels(edges: Sequence[float]) -> list[str]:
    def f(x: float) -> str:
        return f"{x:g}"

    out = [f"≤ {f(edges[0])}"]
    out += [f"{f(lo)} – {f(hi)}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return [*out, f"> {f(edges[-1])}"]


def _mean_ci(v: np.ndarray) -> tuple[float, float, float]:
    if not len(v):
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    half = Z95 * float(v.std(ddof=1)) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return mean, mean - half, mean + half


def _layer(labels: dict[str, str], v: np.ndarray, total_n: int) -> LayerRow:
    mean, lo, hi = _mean_ci(v)
    return LayerRow(labels, len(v), len(v) / max(total_n, 1), mean, lo, hi, float(v.sum()))


def future_value_report(
    engine: sa.Engine,
    *,
    by: Sequence[str] = ("lifecycle_stage",),
    bands: Mapping[str, BandSpec] | None = None,
    tree: bool = True,
    tree_features: Sequence[str] | None = None,
    min_leaf: int = MIN_LEAF,
    depth: int = TREE_DEPTH,
    seed: int = 0,
) -> FutureValueReport:
    """Future value by layer (``by``) and the honest tree; ``bands`` from the plan (added to and
    overriding the built-in ones)."""
    all_bands = {**DEFAULT_BANDS, **(bands or {})}
    with engine.connect() as conn:
        model = _stored_model(conn)
        ids = _purchasers(conn)
        if not len(ids):
            raise InputError(
                "no customer has a predicted value yet: import events and run "
                "`orch segments refresh` (the value model needs repeat purchases)"
            )
        features, attributes = available_fields(conn)
        known = {**features, **attributes, **{b: "band" for b in all_bands}}
        for name in by:
            if name not in known:
                raise InputError(
                    f"unknown --by field {name!r}: use a band ({', '.join(all_bands)}), a "
                    "computed feature or a customer attribute"
                )
        for name, band in all_bands.items():
            if name in by and band.field not in features and band.field not in attributes:
                raise InputError(f"band {name!r} cuts {band.field!r}, which is no customer field")
        candidates = (
            _tree_candidates(features, attributes, all_bands, tree_features) if tree else []
        )
        needed = sorted(
            {VALUE} | {all_bands[n].field if n in all_bands else n for n in (*by, *candidates)}
        )
        columns = customer_columns(conn, ids, needed)
    value = _numbers(columns[VALUE][0])
    n = len(value)
    layers = [_codes_of(name, columns, all_bands) for name in by]
    rows: list[LayerRow] = []
    if layers:
        key = np.zeros(n, dtype=np.int64)
        for codes, names in layers:
            key = key * (len(names) + 1) + codes
        for k in np.unique(key):
            members = key == k
            first = np.flatnonzero(members)[0]
            labels = {name: layers[j][1][layers[j][0][first]] for j, name in enumerate(by)}
            rows.append(_layer(labels, value[members], n))
    report = FutureValueReport(
        as_of=date.fromisoformat(model["as_of"]) if model.get("as_of") else None,
        horizon_days=model.get("horizon_days"),
        customers=n,
        by=list(by),
        rows=rows,
        overall=_layer({}, value, n),
    )
    if tree:
        report.tree_features = candidates
        report.tree = _honest_tree(value, candidates, columns, all_bands, min_leaf, depth, seed)
        if not report.tree:
            report.notes.append(
                f"no tree: fewer than {2 * min_leaf} customers in the judging half, or no "
                "candidate field varies"
            )
    return report


def _stored_model(conn: sa.Connection) -> dict[str, Any]:
    from orchestrator.segments.model_store import load_model

    return load_model(conn) or {}


def _purchasers(conn: sa.Connection) -> pa.Array:
    rows = conn.execute(
        sa.text(
            "SELECT customer_id FROM customer_features WHERE expected_value IS NOT NULL "
            "ORDER BY customer_id"
        )
    ).all()
    return pa.array([r[0] for r in rows], pa.string())


def _numbers(values: pa.Array) -> np.ndarray:
    return np.asarray(
        pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
    )


def _codes_of(
    name: str, columns: Mapping[str, tuple[pa.Array, str]], bands: Mapping[str, BandSpec]
) -> tuple[np.ndarray, list[str]]:
    if name in bands:
        return band_codes(_numbers(columns[bands[name].field][0]), bands[name])
    values, kind = columns[name]
    codes, labels, _ = label_values(values, kind)
    return codes, labels


def _tree_candidates(
    features: Mapping[str, str],
    attributes: Mapping[str, str],
    bands: Mapping[str, BandSpec],
    chosen: Sequence[str] | None,
) -> list[str]:
    every = [
        *bands,
        *(f for f in features if f not in MODEL_FIELDS),
        *(a for a, kind in sorted(attributes.items()) if kind != "date"),
    ]
    if chosen is None:
        return [c for c in every if c not in {b.field for b in bands.values()}]
    for name in chosen:
        if name not in every and name not in MODEL_FIELDS:
            raise InputError(f"unknown --features field {name!r}")
    return list(dict.fromkeys(chosen))


def _design(
    names: Sequence[str],
    columns: Mapping[str, tuple[pa.Array, str]],
    bands: Mapping[str, BandSpec],
) -> tuple[np.ndarray, list[tuple[str, str | None]]]:
    """The tree's matrix: numbers as they are (NaN as the median), every label of a text field
    or band as a 0/1 column; and what each column is (field, label or None)."""
    cols: list[np.ndarray] = []
    meaning: list[tuple[str, str | None]] = []
    for name in names:
        if name in bands:
            codes, labels = _codes_of(name, columns, bands)
        else:
            values, kind = columns[name]
            if kind == "number":
                v = _numbers(values)
                if np.isfinite(v).any():
                    cols.append(np.where(np.isfinite(v), v, np.nanmedian(v)))
                    meaning.append((name, None))
                continue
            codes, labels, _ = label_values(values, kind)
        for j, label in enumerate(labels):
            if label != UNKNOWN:
                cols.append((codes == j).astype(np.float64))
                meaning.append((name, label))
    if not cols:
        return np.zeros((0, 0)), []
    return np.column_stack(cols), meaning


def _honest_tree(
    value: np.ndarray,
    names: Sequence[str],
    columns: Mapping[str, tuple[pa.Array, str]],
    bands: Mapping[str, BandSpec],
    min_leaf: int,
    depth: int,
    seed: int,
) -> list[Leaf]:
    from sklearn.tree import DecisionTreeRegressor

    x, meaning = _design(names, columns, bands)
    if not meaning:
        return []
    keep = [j for j in range(x.shape[1]) if np.ptp(x[:, j]) > 0]
    x, meaning = x[:, keep], [meaning[j] for j in keep]
    if not meaning:
        return []
    half = np.random.default_rng(seed).random(len(value)) < 0.5
    if half.sum() < 2 * min_leaf or (~half).sum() < 2 * min_leaf:
        return []
    grown = DecisionTreeRegressor(max_depth=depth, min_samples_leaf=min_leaf, random_state=seed)
    grown.fit(x[half], value[half])
    judge = ~half
    leaf_of = grown.apply(x[judge])
    rules = _leaf_rules(grown, meaning)
    out = []
    for leaf, rule in rules.items():
        v = value[judge][leaf_of == leaf]
        mean, lo, hi = _mean_ci(v)
        out.append(Leaf(rule, len(v), mean, lo, hi))
    return sorted(out, key=lambda leaf: -leaf.mean if np.isfinite(leaf.mean) else np.inf)


def _leaf_rules(grown: Any, meaning: Sequence[tuple[str, str | None]]) -> dict[int, str]:
    t = grown.tree_
    out: dict[int, str] = {}

    def walk(node: int, path: list[str]) -> None:
        if t.children_left[node] == -1:
            out[node] = " and ".join(path) or "everyone"
            return
        name, label = meaning[t.feature[node]]
        cut = float(t.threshold[node])
        if label is None:
            left, right = f"{name} ≤ {cut:.4g}", f"{name} > {cut:.4g}"
        else:
            left, right = f"{name} ≠ {label}", f"{name} = {label}"
        walk(int(t.children_left[node]), [*path, left])
        walk(int(t.children_right[node]), [*path, right])

    walk(0, [])
    return out
