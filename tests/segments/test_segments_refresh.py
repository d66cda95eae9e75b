"""The refresh on SQLite and PostgreSQL: features, stored model, segment history, transitions."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from helpers_segments import add_customers, add_events, simulated_shop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import InputError, NotFound, StateVersionError
from orchestrator.segments import (
    SegmentConfig,
    load_model,
    refresh_segments,
    segment_at,
    segments_on,
    transition_matrix,
)
from orchestrator.segments.config import LifecycleConfig, ModelConfig
from orchestrator.segments.history import record_history
from orchestrator.segments.model_store import MODEL_KEY, require_model
from orchestrator.storage.models import utcnow

D = date(2026, 3, 31)


def features(engine: sa.Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM customer_features")).mappings().all()
    return {r["customer_id"]: dict(r) for r in rows}


def history(engine: sa.Engine, kind: str = "lifecycle") -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text(
                    "SELECT id, customer_id, value, valid_from, valid_to FROM segment_history "
                    "WHERE kind = :k ORDER BY customer_id, valid_from"
                ),
                {"k": kind},
            )
        ]


def as_day(value: object) -> date | None:
    if value is None or isinstance(value, date):
        return value  # type: ignore[return-value]
    return date.fromisoformat(str(value)[:10])


def test_features_of_every_kind_of_customer(engine: sa.Engine) -> None:
    add_customers(engine, ["A", "B", "C", "E"])
    add_events(
        engine,
        [
            ("A", "2025-12-01 09:00", "purchase", 50.0, 0.0, "shoes", "store"),
            ("A", "2025-12-01 17:00", "purchase", 30.0, 0.2, "home", "store"),  # same day
            ("A", "2026-03-01", "purchase", 40.0, 0.1, "shoes", "web"),
            ("A", "2026-03-10", "return", -20.0, None, "shoes", "web"),
            ("A", "2026-03-11", "visit", 0.0, None, "beauty", "app"),
            ("B", "2026-03-20", "purchase", 25.0, None, None, None),
            ("D", "2026-02-01", "purchase", 10.0, 0.0, "home", "app"),  # no customer record
            ("E", "2026-03-02", "visit", 0.0, None, "home", "web"),
            ("A", "2026-04-02", "purchase", 999.0, 0.0, "home", "web"),  # after the as-of day
        ],
    )
    result = refresh_segments(engine, as_of=D)
    got = features(engine)
    assert set(got) == {"A", "B", "C", "D", "E"}
    assert result.customers == 5 and result.purchasers == 3 and result.repeat_customers == 1
    assert {as_day(r["as_of"]) for r in got.values()} == {D}
    a = got["A"]
    assert a["recency_days"] == 30 and a["tenure_days"] == 120 and a["frequency"] == 1
    assert a["monetary"] == pytest.approx(100.0)  # 120 bought, 20 returned
    assert a["lifecycle_stage"] == "active"
    assert a["discount_affinity"] == pytest.approx(2 / 3)
    assert a["preferred_category"] == "shoes" and a["preferred_channel"] == "store"
    b = got["B"]
    assert b["lifecycle_stage"] == "new" and b["frequency"] == 0 and b["monetary"] == 25.0
    assert b["discount_affinity"] is None and b["preferred_category"] is None
    for prospect in ("C", "E"):
        row = got[prospect]
        assert row["lifecycle_stage"] == "prospect"
        assert row["rfm_cell"] is None and row["frequency"] is None and row["r_score"] is None
        assert row["p_alive"] is None and row["preferred_category"] is None
    assert got["D"]["lifecycle_stage"] == "active"
    assert {r["rfm_cell"] for k, r in got.items() if k in "ABD"} <= set(result.rfm)
    # Three customers are too few to fit a model: said so, and no predictions.
    assert any("not fitted" in note for note in result.model["notes"])
    assert a["p_alive"] is None and a["expected_value"] is None
    assert a["p_buy_7d"] is None and a["days_to_next_purchase"] is None


def test_models_are_fitted_stored_and_applied(engine: sa.Engine) -> None:
    add_events(engine, simulated_shop(400, date(2025, 4, 1), 365, seed=3))
    as_of = date(2026, 3, 31)
    result = refresh_segments(engine, as_of=as_of)
    bg, gg = result.model["bgnbd"], result.model["gamma_gamma"]
    assert bg["converged"] and gg["converged"], result.model["notes"]
    assert {"r", "alpha", "a", "b"} <= set(bg) and {"p", "q", "v"} <= set(gg)
    buckets = result.model["frequency_buckets"]
    assert sum(b["observed"] for b in buckets) == result.purchasers
    assert sum(b["expected"] for b in buckets) == pytest.approx(result.purchasers)
    with engine.connect() as conn:
        stored = require_model(conn)
    assert stored["bgnbd"]["r"] == pytest.approx(bg["r"]) and stored["as_of"] == "2026-03-31"
    rows = list(features(engine).values())
    once = [r for r in rows if r["frequency"] == 0]
    more = [r for r in rows if r["frequency"] and r["frequency"] > 0]
    assert once and more
    assert all(r["p_alive"] == 1.0 and r["churn_risk"] == 0.0 for r in once)
    assert all(0 < r["p_alive"] <= 1 for r in more)
    for r in rows:
        assert r["churn_risk"] == pytest.approx(1 - r["p_alive"])
        assert r["expected_purchases"] >= 0 and r["expected_value"] >= 0
        assert 0 <= r["p_buy_7d"] <= r["p_buy_30d"] <= r["p_alive"] + 1e-12
        assert r["days_to_next_purchase"] > 0
    # A longer horizon, in weeks: more expected purchases, the same P(alive).
    weeks = SegmentConfig(model=ModelConfig(time_unit="weeks", horizon_days=180))
    refresh_segments(engine, as_of=as_of, config=weeks)
    longer = features(engine)
    for r in rows:
        other = longer[r["customer_id"]]
        assert other["p_alive"] == pytest.approx(r["p_alive"], abs=2e-3)
        assert other["expected_purchases"] >= r["expected_purchases"] - 1e-3


def test_history_opens_and_closes_rows_exactly_on_changes(engine: sa.Engine) -> None:
    add_customers(engine, ["A", "B", "C"])
    add_events(
        engine,
        [
            ("A", "2026-01-10", "purchase", 20.0, 0.0, "home", "web"),
            ("B", "2025-06-01", "purchase", 20.0, 0.0, "home", "web"),
        ],
    )
    d1, d2, d3 = date(2026, 1, 31), date(2026, 2, 28), date(2026, 4, 30)
    refresh_segments(engine, as_of=d1)
    first = {r[1]: r for r in history(engine)}
    assert {k: v[2] for k, v in first.items()} == {"A": "new", "B": "lapsed", "C": "prospect"}
    assert all(as_day(r[3]) == d1 and r[4] is None for r in first.values())

    # By d2, A is no longer new, B and C are unchanged: only A's rows move.
    result = refresh_segments(engine, as_of=d2)
    assert result.history_changes["lifecycle"] == 1
    second = history(engine)
    assert len(second) == 4
    a_rows = [r for r in second if r[1] == "A"]
    assert [(r[2], as_day(r[3]), as_day(r[4])) for r in a_rows] == [
        ("new", d1, d2),
        ("active", d2, None),
    ]
    assert [r for r in second if r[1] in "BC"] == [first["B"], first["C"]]  # untouched

    # C buys, B comes back after a long gap.
    add_events(
        engine,
        [
            ("C", "2026-04-20", "purchase", 15.0, 0.0, "home", "web"),
            ("B", "2026-04-25", "purchase", 30.0, 0.0, "home", "web"),
        ],
    )
    refresh_segments(engine, as_of=d3)
    with engine.connect() as conn:
        assert segment_at(conn, "lifecycle", d1 - timedelta(days=1)) == {}
        assert segment_at(conn, "lifecycle", d1) == {"A": "new", "B": "lapsed", "C": "prospect"}
        assert segment_at(conn, "lifecycle", d2 + timedelta(days=10))["A"] == "active"
        now = segment_at(conn, "lifecycle", d3)
        assert now == {"A": "at_risk", "B": "reactivated", "C": "new"}
        assert segment_at(conn, "rfm", d1 - timedelta(days=1)) == {}
        assert set(segment_at(conn, "rfm", d3)) == {"A", "B", "C"}  # prospects have no cell
        assert set(segment_at(conn, "rfm", d1)) == {"A", "B"}
        matrix = transition_matrix(conn, "lifecycle", d1, d3)
    assert matrix.rows == ["prospect", "new", "lapsed"]
    assert matrix.columns == ["new", "at_risk", "reactivated"]
    assert matrix.counts.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert matrix.moved == 3 and matrix.total == 3


def test_a_refresh_repeated_for_the_same_day_replaces_it(engine: sa.Engine) -> None:
    add_customers(engine, ["A", "B"])
    add_events(engine, [("A", "2026-01-10", "purchase", 20.0, 0.0, "home", "web")])
    d1, d2 = date(2026, 1, 31), date(2026, 3, 31)
    refresh_segments(engine, as_of=d1)
    refresh_segments(engine, as_of=d2)
    before = history(engine)
    again = refresh_segments(engine, as_of=d2)
    assert [r[1:] for r in history(engine)] == [r[1:] for r in before]
    # Late events for d2 arrive: the redo reflects them, and no zero-length rows appear.
    add_events(engine, [("B", "2026-03-30", "purchase", 20.0, 0.0, "home", "web")])
    redo = refresh_segments(engine, as_of=d2)
    assert redo.history_changes["lifecycle"] == again.history_changes["lifecycle"] + 1
    rows = history(engine)
    assert all(r[4] is None or as_day(r[4]) > as_day(r[3]) for r in rows)
    with engine.connect() as conn:
        assert segment_at(conn, "lifecycle", d2) == {"A": "active", "B": "new"}
        assert segment_at(conn, "lifecycle", d1) == {"A": "new", "B": "prospect"}


def test_bad_input_writes_nothing(engine: sa.Engine, snapshot) -> None:
    add_customers(engine, ["A"])
    empty = snapshot(engine)
    with pytest.raises(InputError, match="no events yet"):
        refresh_segments(engine)
    assert snapshot(engine) == empty
    add_events(engine, [("A", "2026-01-10", "purchase", 20.0, 0.0, "home", "web")])
    loaded = snapshot(engine)
    with pytest.raises(InputError, match="no events up to 2026-01-09"):
        refresh_segments(engine, as_of=date(2026, 1, 9))
    assert snapshot(engine) == loaded
    result = refresh_segments(engine)  # defaults to the latest event's day
    assert result.as_of == date(2026, 1, 10)
    refreshed = snapshot(engine)
    with pytest.raises(InputError, match="before the last refresh"):
        refresh_segments(engine, as_of=date(2026, 1, 10) - timedelta(days=1))
    assert snapshot(engine) == refreshed
    with engine.connect() as conn:
        with pytest.raises(InputError, match="unknown segment kind 'tier'"):
            segment_at(conn, "tier", D)
        with pytest.raises(InputError, match="unknown segment kind"):
            transition_matrix(conn, "tier", D, D)
        with pytest.raises(InputError, match="is after"):
            transition_matrix(conn, "rfm", D, D - timedelta(days=1))


def test_transitions_need_a_history_and_the_model_a_refresh(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        with pytest.raises(InputError, match="no segment history yet"):
            transition_matrix(conn, "lifecycle", D, D)
        assert load_model(conn) is None
        with pytest.raises(NotFound, match="run `orch segments refresh` first"):
            require_model(conn)


def test_a_model_stored_by_a_newer_version_is_refused(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO plan_setting (key, value) VALUES (:k, :v)"),
            {"k": MODEL_KEY, "v": '{"version": 99, "as_of": "2026-01-01"}'},
        )
    with engine.connect() as conn, pytest.raises(StateVersionError, match="upgrade orch"):
        load_model(conn)


def test_thresholds_from_the_config_are_used(engine: sa.Engine) -> None:
    add_events(engine, [("A", "2026-02-25", "purchase", 20.0, 0.0, "home", "web")])
    refresh_segments(engine, as_of=D)  # 34 days ago
    assert features(engine)["A"]["lifecycle_stage"] == "active"
    wide = SegmentConfig(lifecycle=LifecycleConfig(new_days=45))
    result = refresh_segments(engine, as_of=D, config=wide)
    assert features(engine)["A"]["lifecycle_stage"] == "new"
    assert result.model["config"]["lifecycle"]["new_days"] == 45


# --- history as a function of the sequence of segment values -------------------------------

VALUES = st.sampled_from(["x", "y", "z", None])
CUSTOMERS = ["c1", "c2", "c3"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.lists(VALUES, min_size=3, max_size=3)), max_size=6)
)
def test_history_reproduces_any_sequence_of_segments(
    engine: sa.Engine, steps: list[tuple[int, list[str | None]]]
) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM segment_history")
    day = date(2026, 1, 1)
    seen: list[tuple[date, dict[str, str | None]]] = []
    changes = 0
    previous: dict[str, str | None] = dict.fromkeys(CUSTOMERS)
    for gap, values in steps:
        day += timedelta(days=gap)
        current = dict(zip(CUSTOMERS, values, strict=True))
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM customer_features")
            conn.execute(
                sa.text(
                    "INSERT INTO customer_features (customer_id, as_of, lifecycle_stage, "
                    "updated_at) VALUES (:c, :d, :v, :t)"
                ).bindparams(sa.bindparam("d", type_=sa.Date())),
                [{"c": c, "d": day, "v": v, "t": utcnow()} for c, v in current.items()],
            )
            opened = record_history(conn, "lifecycle", day)
        assert opened == sum(1 for c in CUSTOMERS if current[c] and current[c] != previous[c])
        changes += opened
        seen.append((day, current))
        previous = current
    rows = history(engine)
    assert len(rows) == changes
    open_rows = [r[1] for r in rows if r[4] is None]
    assert len(open_rows) == len(set(open_rows))
    asked: list[tuple[str, date]] = []
    wanted: list[str | None] = []
    with engine.connect() as conn:
        for k, (when, values) in enumerate(seen):
            want = {c: v for c, v in values.items() if v is not None}
            assert segment_at(conn, "lifecycle", when) == want
            following = seen[k + 1][0] if k + 1 < len(seen) else when + timedelta(days=30)
            assert segment_at(conn, "lifecycle", following - timedelta(days=1)) == want
            for c in [*CUSTOMERS, "stranger"]:
                asked += [(c, when), (c, following - timedelta(days=1))]
                wanted += [values.get(c)] * 2
        if seen:
            asked.append(("c1", seen[0][0] - timedelta(days=1)))
            wanted.append(None)
        got = segments_on(conn, "lifecycle", [c for c, _ in asked], [d for _, d in asked])
    assert got == wanted


def test_transition_matrix_counts_customers_by_their_two_segments(engine: sa.Engine) -> None:
    add_events(engine, simulated_shop(150, date(2025, 1, 1), 500, seed=8))
    d1, d2 = date(2025, 9, 30), date(2026, 5, 15)
    refresh_segments(engine, as_of=d1)
    refresh_segments(engine, as_of=d2)
    for kind in ("lifecycle", "rfm"):
        with engine.connect() as conn:
            matrix = transition_matrix(conn, kind, d1, d2)
            start, end = segment_at(conn, kind, d1), segment_at(conn, kind, d2)
        want: dict[tuple[str, str], int] = {}
        for c in set(start) | set(end):
            key = (start.get(c, "(none)"), end.get(c, "(none)"))
            want[key] = want.get(key, 0) + 1
        got = {
            (a, b): int(matrix.counts[i, j])
            for i, a in enumerate(matrix.rows)
            for j, b in enumerate(matrix.columns)
            if matrix.counts[i, j]
        }
        assert got == want
        assert matrix.to_dict()["total"] == len(set(start) | set(end))


def test_awkward_text_survives_the_trip(engine: sa.Engine) -> None:
    odd = 'O\'Brien, "Jr"\nline two'
    add_customers(engine, [odd])
    add_events(
        engine,
        [
            (odd, "2026-03-01", "purchase", 10.0, 0.0, "", "web,app"),
            (odd, "2026-03-02", "purchase", 10.0, 0.0, "", "web,app"),
            ("Ünï", "2026-03-03", "purchase", 10.0, 0.0, None, "'quoted'"),
        ],
    )
    refresh_segments(engine, as_of=D)
    got = features(engine)
    assert set(got) == {odd, "Ünï"}
    assert got[odd]["preferred_category"] == "" and got[odd]["preferred_channel"] == "web,app"
    assert got[odd]["frequency"] == 1
    assert got["Ünï"]["preferred_category"] is None
    assert got["Ünï"]["preferred_channel"] == "'quoted'"
