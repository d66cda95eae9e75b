"""The decision core decides the same for any slicing of a run (Hypothesis), and its spec is
plain data that survives JSON."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.engine.history import history_from_rows
from orchestrator.engine.partition import (
    PolicySpec,
    RunCounts,
    RunSpec,
    decide_partition,
    materialize,
)
from orchestrator.plan import Plan
from orchestrator.storage.run_repo import RawBatch
from tests.engine.test_decide_invariants import plans

DAY = date(2026, 11, 20)
N = 120
ONE_CAMPAIGN = Plan.model_validate(
    {"campaigns": [{"id": "c", "channel": "email", "treatments": [{"id": "a"}, {"id": "b"}]}]}
)


def spec_of(plan, seed: int, policy: str = "uniform") -> RunSpec:
    return RunSpec(
        day=DAY,
        seed=seed,
        plan=plan.model_dump(mode="json"),
        attributes={"score": "number"},
        context_names=("score",),
        policy=PolicySpec(policy, {"context_names": ["score"]}),
    )


def customers(scores: np.ndarray) -> RawBatch:
    ids = [f"u{i:04d}" for i in range(len(scores))]
    return RawBatch.of_rows(ids, [{"score": float(s)} for s in scores])


def history_rows(plan, ids: list[str], rng: np.random.Generator) -> list[tuple]:
    """Random past decisions: sends, controls and send-nothing over the last two weeks."""
    rows = []
    camps = [c.id for c in plan.campaigns]
    for cid in ids:
        for _ in range(int(rng.integers(0, 4))):
            age = int(rng.integers(1, 15))
            c = camps[int(rng.integers(len(camps)))]
            channel = plan.campaign(c).channel
            group = "test" if rng.random() < 0.8 else "control"
            end = DAY - timedelta(days=age) + timedelta(days=int(rng.integers(1, 10)))
            rows.append((cid, DAY - timedelta(days=age), c, channel, group, end))
    return rows


def decide_in_slices(prepared, batch: RawBatch, rows: list[tuple], cuts: list[int]) -> list:
    """Decide ``batch`` in the slices given by ``cuts``; the decision rows and the counts."""
    plan = prepared.plan
    out: list[tuple] = []
    counts = RunCounts()
    edges = [0, *cuts, len(batch.ids)]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if lo == hi:
            continue
        ids = batch.ids[lo:hi]
        part = RawBatch(ids, {k: v[lo:hi] for k, v in batch.attributes.items()}, {})
        history = history_from_rows(
            [r for r in rows if r[0] in set(ids)],
            ids,
            day=DAY,
            campaign_vocab=[c.id for c in plan.campaigns],
            channel_vocab=sorted({c.channel for c in plan.campaigns}),
            measured={c.id: c.measured for c in plan.campaigns},
        )
        result = decide_partition(prepared, part, history)
        out += result.rows
        counts.add(result.counts)
    return [sorted(out), counts.to_json()]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=plans(),
    seed=st.integers(0, 2**31 - 1),
    policy=st.sampled_from(["uniform", "lints"]),
    data=st.data(),
)
def test_decisions_do_not_depend_on_batches_or_partitions(plan, seed, policy, data) -> None:
    rng = np.random.default_rng(seed)
    batch = customers(rng.random(N))
    rows = history_rows(plan, batch.ids, rng)
    prepared = materialize(spec_of(plan, seed, policy))
    whole = decide_in_slices(prepared, batch, rows, [])
    for size in (1, 7, 1000, 50_000):
        cuts = list(range(size, N, size))
        assert decide_in_slices(prepared, batch, rows, cuts) == whole, f"batch size {size}"
    for parts in (3, 8):
        cuts = sorted(
            data.draw(st.lists(st.integers(0, N), min_size=parts - 1, max_size=parts - 1))
        )
        assert decide_in_slices(prepared, batch, rows, cuts) == whole, f"{parts} partitions"


def test_another_seed_decides_otherwise() -> None:
    """The draws depend on the seed, so the slicing test above is not trivially true."""
    plan = ONE_CAMPAIGN
    batch = customers(np.linspace(0, 1, N))
    a = decide_in_slices(materialize(spec_of(plan, 1)), batch, [], [])[0]
    b = decide_in_slices(materialize(spec_of(plan, 2)), batch, [], [])[0]
    assert len(a) > N / 2 and a != b


def test_spec_is_plain_data_that_round_trips() -> None:
    plan = ONE_CAMPAIGN
    spec = RunSpec(
        day=DAY,
        seed=7,
        plan=plan.model_dump(mode="json"),
        attributes={"score": "number"},
        context_names=("score", "contacts.7d"),
        policy=PolicySpec("lints", {"context_names": ["score"]}, b"\x00state\xff", 3, ("score",)),
        cold_start=0.25,
        apprentice=PolicySpec("egreedy", {}),
    )
    again = RunSpec.from_json(spec.to_json())
    assert again == spec and again.digest == spec.digest


def test_the_policy_context_leaves_out_the_fields_measured_to_hurt_the_learner() -> None:
    from orchestrator.engine.columns import context_names
    from orchestrator.features import NOT_POLICY_CONTEXT, rule_schema

    names = context_names(rule_schema({"email_opt_in": "bool"}))
    assert "p_alive" in names and "expected_value" in names and "email_opt_in" in names
    assert not NOT_POLICY_CONTEXT & set(names)
    assert "lifecycle_stage=active" in names
