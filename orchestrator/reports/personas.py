"""`orch report personas`: the sub-groups where a campaign works well, somewhat, or not at all.

Each customer of the campaign (or treatment) in the period is one unit: the average value of
their decisions' windows, in the test or control group. Split candidates are every customer
attribute (bool, number or text; dates are skipped), every computed feature of
``customer_features``, and
``lifecycle``/``rfm``, the segment the customer was in on their first decision date of the
period (when the segmentation keeps a history). The tree itself is
:func:`orchestrator.measure.personas.grow_uplift_tree`.

Features come from the latest segmentation refresh, possibly after the decisions: a feature the
campaign itself changed (spend after a discount) can attract splits, so prefer attributes and
decision-date segments when in doubt (``--features``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from orchestrator.errors import InputError
from orchestrator.features import COMPUTED_FEATURES
from orchestrator.measure.personas import CRITERIA, Feature, UpliftTree, grow_uplift_tree
from orchestrator.reports.data import (
    SEGMENT_KINDS,
    Outcomes,
    attribute_types,
    check_filters,
    customer_columns,
    day_of_number,
    groups_present,
    load_outcomes,
    segment_history_values,
)

MAX_CATEGORIES = 30


@dataclass
class PersonaReport:
    campaign: str
    treatment: str | None
    since: date
    until: date
    as_of: date
    customers: int
    features: list[str]
    tree: UpliftTree
    still_open: int

    def as_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        return {
            "campaign": self.campaign,
            "treatment": self.treatment,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "as_of": self.as_of.isoformat(),
            "customers": self.customers,
            "features": self.features,
            "criterion": self.tree.criterion,
            "seed": self.tree.seed,
            "min_leaf": self.tree.min_leaf,
            "customers_for_splits": self.tree.n_train,
            "customers_for_estimates": self.tree.n_estimate,
            "overall": {
                "uplift": num(float(self.tree.overall.estimate[0])),
                "low": num(float(self.tree.overall.low[0])),
                "high": num(float(self.tree.overall.high[0])),
            },
            "nodes": [
                {
                    "id": n.id,
                    "parent": n.parent,
                    "depth": n.depth,
                    "group": n.description,
                    "branch": n.branch,
                    "split": n.split_feature,
                    "children": list(n.children) if n.children else None,
                    "n_test": n.n_test,
                    "n_control": n.n_control,
                    "value_test": num(n.mean_test),
                    "value_control": num(n.mean_control),
                    "uplift": num(n.effect),
                    "uplift_low": num(n.low),
                    "uplift_high": num(n.high),
                    "p_value": num(n.p_value),
                    "q_value": num(n.q_value),
                    "label": n.label if n.is_leaf else None,
                    "recommendation": n.recommendation if n.is_leaf else None,
                }
                for n in self.tree.nodes
            ],
        }


def persona_report(
    engine: sa.Engine,
    *,
    campaign: str,
    as_of: date,
    treatment: str | None = None,
    since: date | None = None,
    until: date | None = None,
    features: Sequence[str] | None = None,
    seed: int = 0,
    min_leaf: int = 100,
    max_depth: int = 3,
    criterion: str = "interaction",
    alpha: float = 0.05,
) -> PersonaReport:
    """Grow the honest uplift tree of one campaign (or treatment) over the period."""
    if criterion not in CRITERIA:
        raise InputError(f"--criterion: {criterion!r} is not one of {', '.join(CRITERIA)}")
    if min_leaf < 1:
        raise InputError("--min-leaf must be at least 1")
    if not 1 <= max_depth <= 8:
        raise InputError("--max-depth must be between 1 and 8")
    with engine.connect() as conn:
        names = _feature_names(conn, features)
        check_filters(conn, campaign, treatment)
        present = groups_present(conn, campaign, treatment, since, until)
    if len(present) == 1:  # checked before rewards mature: a refused report writes nothing
        raise _one_group(campaign, "control" if present == {"test"} else "test")
    data = load_outcomes(
        engine, as_of=as_of, since=since, until=until, campaign=campaign, treatment=treatment
    )
    if not data.test.any() or data.test.all():
        raise _one_group(campaign, "control" if data.test.all() else "test")
    units = _units(data)
    with engine.connect() as conn:
        cols = _features(conn, data, units, names)
    tree = grow_uplift_tree(
        cols,
        units.value,
        units.test,
        seed=seed,
        min_leaf=min_leaf,
        max_depth=max_depth,
        criterion=criterion,
        alpha=alpha,
    )
    return PersonaReport(
        campaign=campaign,
        treatment=treatment,
        since=day_of_number(int(data.day.min())),
        until=day_of_number(int(data.day.max())),
        as_of=as_of,
        customers=len(units.value),
        features=[c.name for c in cols],
        tree=tree,
        still_open=data.still_open,
    )


def _one_group(campaign: str, missing: str) -> InputError:
    return InputError(
        f"campaign {campaign!r} has no {missing} group in this period: no uplift to explain"
    )


def _feature_names(conn: sa.Connection, features: Sequence[str] | None) -> list[str]:
    attrs = attribute_types(conn)
    usable = [name for name, kind in sorted(attrs.items()) if kind != "date"]
    everything = [*SEGMENT_KINDS, *COMPUTED_FEATURES, *usable]
    if not features:
        return everything
    for name in features:
        if name not in everything:
            if attrs.get(name) == "date":
                raise InputError(f"--features {name!r} is a date attribute: it cannot split")
            raise InputError(
                f"unknown --features field {name!r}: use lifecycle, rfm, a computed feature "
                f"({', '.join(COMPUTED_FEATURES)}) or a customer attribute "
                f"({', '.join(usable) or 'none'})"
            )
    return list(dict.fromkeys(features))


@dataclass
class _Units:
    """One unit per (customer, group): ``customer`` codes, first decision day, value, test."""

    customer: np.ndarray
    day: np.ndarray
    value: np.ndarray
    test: np.ndarray


def _units(data: Outcomes) -> _Units:
    # Customers in id order, so the seeded halves do not depend on the order rows were read in.
    rank = np.empty(len(data.customer_ids), dtype=np.int64)
    rank[np.asarray(pc.sort_indices(data.customer_ids).to_numpy())] = np.arange(
        len(data.customer_ids)
    )
    key = rank[data.customer] * 2 + data.test
    keys, unit_of = np.unique(key, return_inverse=True)
    # A customer's average window value: customers with more decisions weigh no more.
    value = np.bincount(unit_of, weights=data.value, minlength=len(keys)) / np.bincount(
        unit_of, minlength=len(keys)
    )
    first_day = np.full(len(keys), np.iinfo(np.int64).max)
    np.minimum.at(first_day, unit_of, data.day)
    customer = np.empty(len(keys), dtype=np.int64)
    customer[unit_of] = data.customer
    return _Units(customer, first_day, value, (keys % 2) == 1)


def _features(
    conn: sa.Connection, data: Outcomes, units: _Units, names: list[str]
) -> list[Feature]:
    """The split candidates of each unit; fields nobody has a value of are left out."""
    fields = customer_columns(conn, data.customer_ids, [n for n in names if n not in SEGMENT_KINDS])
    units_customer = pa.array(units.customer)
    out = []
    for name in names:
        feature: Feature | None
        if name in SEGMENT_KINDS:
            values = segment_history_values(
                conn, data.customer_ids, name, units.customer, units.day
            )
            if values is None:
                continue
            feature = _category(name, values)
        else:
            per_customer, kind = fields[name]
            values = per_customer.take(units_customer)
            if kind == "number":
                v = np.asarray(
                    pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), np.float64
                )
                feature = Feature(name, "number", v) if np.isfinite(v).any() else None
            else:
                feature = _category(name, values)
        if feature is not None and _varies(feature):
            out.append(feature)
    if not out:
        raise InputError(
            "no customer attribute or feature with values to split on: import customer "
            "attributes or run the segmentation refresh"
        )
    return out


def _category(name: str, values: pa.Array) -> Feature | None:
    encoded = values if pa.types.is_dictionary(values.type) else values.cast(pa.string())
    if not pa.types.is_dictionary(encoded.type):
        encoded = encoded.dictionary_encode()
    idx = np.asarray(pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False), np.int64)
    labels = [str(v) for v in encoded.dictionary.to_pylist()]
    if not labels:
        return None
    if len(labels) > MAX_CATEGORIES:
        counts = np.bincount(idx[idx >= 0], minlength=len(labels))
        keep = np.sort(np.argsort(-counts, kind="stable")[: MAX_CATEGORIES - 1])
        remap = np.full(len(labels), MAX_CATEGORIES - 1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        idx = np.where(idx >= 0, remap[np.maximum(idx, 0)], -1)
        labels = [labels[i] for i in keep] + ["other"]
    order = np.argsort(labels, kind="stable")
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels))
    idx = np.where(idx >= 0, rank[np.maximum(idx, 0)], -1)
    return Feature(name, "category", idx, tuple(labels[i] for i in order))


def _varies(feature: Feature) -> bool:
    v = feature.values
    if feature.kind == "number":
        known = v[np.isfinite(v)]
        return len(known) > 0 and bool(known.min() < known.max() or len(known) < len(v))
    return len(np.unique(v)) > 1
