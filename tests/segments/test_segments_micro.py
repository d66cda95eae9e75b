"""Micro-segments: planted groups are found and named, labels survive a re-run and a small change
of the data, and the refresh writes them, with their history, on both backends."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.segments import refresh_segments
from orchestrator.segments.config import MicroConfig
from orchestrator.segments.micro import Behaviour, fit_micro_segments, mix
from tests.segments.helpers_segments import add_events, simulated_shop

STAGES = ("prospect", "active", "lapsed")
NAMES = ("recency", "frequency", "monetary", "order_value", "tenure", "discount_affinity")


def planted(n_per: int, seed: int) -> tuple[Behaviour, np.ndarray, np.ndarray]:
    """Three groups of active customers (full-price big spenders, deal seekers, recent small
    buyers) and some lapsed ones; returns the behaviour, stage codes and the planted group."""
    rng = np.random.default_rng(seed)
    centres = np.array(
        [
            [3.0, 2.5, 7.0, 5.0, 6.5, 0.05],  # high value, full price
            [3.0, 1.5, 4.5, 3.5, 6.0, 0.90],  # deal seekers
            [1.0, 0.5, 3.0, 3.0, 3.0, 0.30],  # recent, few orders
        ]
    )
    group = np.repeat(np.arange(3), n_per)
    x = centres[group] + rng.normal(0, 0.15, (len(group), 6))
    lapsed = rng.normal(0, 1, (n_per, 6)) + 5.0
    prospects = np.full((20, 6), np.nan)
    matrix = np.vstack([x, lapsed, prospects])
    stages = np.concatenate([np.full(len(x), 1), np.full(n_per, 2), np.full(20, 0)])
    return Behaviour(matrix, NAMES), stages, np.concatenate([group, np.full(n_per + 20, -1)])


def test_planted_groups_are_found_and_named_by_what_sets_them_apart() -> None:
    behaviour, stages, group = planted(300, seed=1)
    micro = fit_micro_segments(behaviour, stages, STAGES, MicroConfig())
    active = next(s for s in micro.stages if s.stage == "active")
    assert active.k == 3 and active.silhouette is not None and active.silhouette > 0.5
    assert [c.label for c in active.clusters] == ["active.1", "active.2", "active.3"]
    rows = np.flatnonzero(group >= 0)
    # Every planted group is one cluster.
    for g in range(3):
        assert len(np.unique(micro.codes[rows[group[rows] == g]])) == 1
    names = " | ".join(c.name for c in active.clusters)
    assert "high value" in names and "deal seeker" in names and "recent" in names
    assert all(c.name.startswith("active · ") for c in active.clusters)
    # Prospects have no micro-segment; every other customer has one of its own stage.
    assert (micro.codes[stages == 0] == -1).all()
    labels = np.array(micro.labels)
    assert all(lab.startswith("lapsed.") for lab in labels[micro.codes[stages == 2]])
    assert sum(c.size for s in micro.stages for c in s.clusters) == int((stages > 0).sum())


def test_labels_survive_a_re_run_and_a_small_change_of_the_data() -> None:
    behaviour, stages, _ = planted(300, seed=2)
    first = fit_micro_segments(behaviour, stages, STAGES, MicroConfig())
    again = fit_micro_segments(behaviour, stages, STAGES, MicroConfig(), first.to_json())
    assert np.array_equal(np.array(first.labels)[first.codes], np.array(again.labels)[again.codes])
    # A week later: everyone drifts a little and 5% new customers arrive. The ids follow the
    # clusters, not their order of discovery (which a new seed changes).
    rng = np.random.default_rng(9)
    moved = behaviour.matrix + rng.normal(0, 0.05, behaviour.matrix.shape)
    extra, extra_stages, _ = planted(15, seed=3)
    later = Behaviour(np.vstack([moved, extra.matrix]), NAMES)
    later_stages = np.concatenate([stages, extra_stages])
    after = fit_micro_segments(later, later_stages, STAGES, MicroConfig(seed=5), first.to_json())
    n = len(stages)
    before_labels = np.array(first.labels)[first.codes]
    after_labels = np.array(after.labels + ("",))[after.codes[:n]]
    kept = (before_labels == after_labels)[first.codes >= 0].mean()
    assert kept > 0.95, kept


def test_a_stage_too_small_to_split_is_one_cluster() -> None:
    behaviour = Behaviour(np.random.default_rng(0).normal(size=(12, 6)), NAMES)
    micro = fit_micro_segments(behaviour, np.ones(12, dtype=np.int64), STAGES, MicroConfig())
    (active,) = micro.stages
    assert active.k == 1 and active.silhouette is None and micro.labels == ("active.1",)
    assert (micro.codes == 0).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(-1, 3)), min_size=0, max_size=40))
def test_mix_counts_each_customers_known_values(purchases: list[tuple[int, int]]) -> None:
    owner = np.array([p[0] for p in purchases], dtype=np.int64)
    codes = np.array([p[1] for p in purchases], dtype=np.int64)
    share, kept = mix(owner, codes, ["a", "b", "c", "d"], 6, top=2)
    assert share.shape == (6, len(kept)) and len(kept) <= 2
    for i in range(6):
        mine = [c for o, c in purchases if o == i and c >= 0]
        for j, value in enumerate(kept):
            want = mine.count("abcd".index(value)) / len(mine) if mine else 0.0
            assert share[i, j] == pytest.approx(want)


def test_the_refresh_writes_micro_segments_and_their_history(engine: sa.Engine) -> None:
    add_events(engine, simulated_shop(400, date(2025, 4, 1), 365, seed=3))
    first = refresh_segments(engine, as_of=date(2026, 2, 28))
    stored = first.model["micro_segments"]["stages"]
    assert "active" in stored and "prospect" not in stored
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT lifecycle_stage, micro_segment FROM customer_features")
        ).all()
        history = conn.execute(
            sa.text("SELECT count(*) FROM segment_history WHERE kind = 'micro'")
        ).scalar_one()
    assert all(
        (m is None) == (stage == "prospect") and (m is None or m.startswith(stage + "."))
        for stage, m in rows
    )
    assert history == sum(1 for _, m in rows if m is not None)
    labels = {c["label"] for s in stored.values() for c in s["clusters"]}
    assert {m for _, m in rows if m} <= labels
    # A month later, from the stored centroids: most customers who stayed in their stage keep
    # their label (they bought a little more or aged a month, nothing else).
    second = refresh_segments(engine, as_of=date(2026, 3, 31))
    assert second.history_changes["micro"] < len(rows)


def test_reports_read_the_micro_segment_a_customer_had_on_each_day(engine: sa.Engine) -> None:
    import pyarrow as pa

    from orchestrator.reports.data import day_number, segment_history_values

    add_events(engine, simulated_shop(400, date(2025, 4, 1), 365, seed=8))
    seen: dict[date, dict[str, str | None]] = {}
    for day in (date(2026, 1, 31), date(2026, 3, 31)):
        refresh_segments(engine, as_of=day)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT customer_id, micro_segment FROM customer_features")
            ).all()
            seen[day] = {str(r[0]): r[1] for r in rows}
    ids = sorted(seen[date(2026, 3, 31)])
    with engine.connect() as conn:
        for day, labels in seen.items():
            got = segment_history_values(
                conn,
                pa.array(ids),
                "micro",
                np.arange(len(ids)),
                np.full(len(ids), day_number(day)),
            )
            assert got is not None
            assert got.to_pylist() == [labels.get(c) for c in ids]
    assert seen[date(2026, 1, 31)] != seen[date(2026, 3, 31)]  # some customers moved


def test_the_plans_segment_settings_bound_the_clusters_of_every_refresh(
    engine: sa.Engine, tmp_path
) -> None:
    from orchestrator import admin
    from orchestrator.errors import PlanError

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "version: 1\nsettings:\n  segments:\n    micro: {min_clusters: 2, max_clusters: 3}\n"
        "campaigns: []\n"
    )
    admin.apply_plan_file(engine, plan, actor="test")
    add_events(engine, simulated_shop(400, date(2025, 4, 1), 365, seed=3))
    result = refresh_segments(engine, as_of=date(2026, 3, 31))  # no config: the plan's
    stages = result.model["micro_segments"]["stages"]
    assert stages and all(s["k"] <= 3 for s in stages.values())
    assert all(set(s["silhouette_by_k"]) <= {"2", "3"} for s in stages.values())
    assert result.model["config"]["micro"]["max_clusters"] == 3
    assert "max_clusters: 3" in admin.export_plan(engine)
    plan.write_text(plan.read_text().replace("min_clusters: 2", "min_clusters: 5"))
    with pytest.raises(PlanError, match=r"settings.segments.*min_clusters \(5\) must not exceed"):
        admin.apply_plan_file(engine, plan, actor="test")
