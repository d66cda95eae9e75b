"""The decision core: ``decide_partition(prepared, customers, contacts)`` for any slice of a run.

A ``RunSpec`` is everything a run date needs, as plain data (the plan, the attribute types, the
policy's kind, parameters and state bytes, the seed): it serializes to JSON and ships to a worker
process or machine, where ``materialize`` compiles it into live objects (rules, the policy's
model). ``decide_partition`` then decides for a slice of customers given their contact history
and returns a ``PartitionResult``: the decision rows as typed columns, the logged contexts, and
the summary counts, all of which concatenate or add up across slices. Because every random draw is
keyed on (seed, run date, customer), the slices can be any size and in any order: the run
decides the same for one batch of a million customers, a thousand batches, or eight workers.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import orjson

from orchestrator.engine.actions import ActionSet, build_actions
from orchestrator.engine.columns import align, build_columns, context_fields, context_matrix
from orchestrator.engine.decide import GROUPS, REASONS, BatchDecisions, decide_batch
from orchestrator.engine.hashing import Draws, customer_keys
from orchestrator.engine.history import History, contact_features, is_contact, lookback_days
from orchestrator.engine.journeys import JourneyInput, JourneyState, journey_plans
from orchestrator.engine.stages import STAGE_NAMES, BatchInput, RunSetup
from orchestrator.errors import PlanError, RuleError
from orchestrator.features import rule_schema
from orchestrator.learning import versions
from orchestrator.plan import Plan
from orchestrator.rules import Rule
from policies import Policy
from policies.cold_start import ColdStart

# --- the spec: plain data ---------------------------------------------------------------------


@dataclass(frozen=True)
class PolicySpec:
    """A policy as data: its kind, constructor parameters and learned state."""

    kind: str
    params: dict[str, Any]
    state: bytes | None = None
    version_id: int | None = None
    trained_names: tuple[str, ...] | None = None  # the context columns it was trained on

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": self.params,
            "state": base64.b64encode(self.state).decode() if self.state else None,
            "version_id": self.version_id,
            "trained_names": list(self.trained_names) if self.trained_names else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PolicySpec:
        state = data.get("state")
        names = data.get("trained_names")
        return cls(
            data["kind"],
            dict(data.get("params") or {}),
            base64.b64decode(state) if state else None,
            data.get("version_id"),
            tuple(names) if names else None,
        )


@dataclass(frozen=True)
class RunSpec:
    """Everything a run date needs to decide, as data (see the module docstring)."""

    day: date
    seed: int
    plan: dict[str, Any]  # Plan.model_dump(mode="json")
    attributes: dict[str, str]  # attribute name -> type, for the rule schema
    context_names: tuple[str, ...]  # the contexts built and logged
    policy: PolicySpec
    cold_start: float | None = None  # the share explored while the learner has no version
    apprentice: PolicySpec | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "day": self.day.isoformat(),
                "seed": self.seed,
                "plan": self.plan,
                "attributes": self.attributes,
                "context_names": list(self.context_names),
                "policy": self.policy.to_json(),
                "cold_start": self.cold_start,
                "apprentice": self.apprentice.to_json() if self.apprentice else None,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> RunSpec:
        data = orjson.loads(raw)
        return cls(
            day=date.fromisoformat(data["day"]),
            seed=int(data["seed"]),
            plan=data["plan"],
            attributes=dict(data["attributes"]),
            context_names=tuple(data["context_names"]),
            policy=PolicySpec.from_json(data["policy"]),
            cold_start=data.get("cold_start"),
            apprentice=PolicySpec.from_json(data["apprentice"]) if data.get("apprentice") else None,
        )

    @property
    def digest(self) -> str:
        return hashlib.blake2b(self.to_json(), digest_size=16).hexdigest()


# --- the live form ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A spec compiled for deciding: rules, actions, the policy's live model."""

    spec: RunSpec
    plan: Plan
    setup: RunSetup
    schema: dict[str, str]
    needed: frozenset[str]
    max_window: int
    apprentice: Policy | None = None
    journey_rules: tuple[tuple[Any, Any], ...] = ()  # per live journey: (entry, exit) rule

    @property
    def context_names(self) -> tuple[str, ...]:
        return self.spec.context_names

    @property
    def policy_names(self) -> tuple[str, ...] | None:
        return self.spec.policy.trained_names

    @property
    def policy_version_id(self) -> int | None:
        return self.spec.policy.version_id

    @property
    def policy_name(self) -> str:
        return str(self.plan.settings.policy.name)

    @property
    def lookback_days(self) -> int:
        setup = self.setup
        return lookback_days(setup.actions, setup.caps, setup.exclusions, self.max_window)


def materialize(spec: RunSpec) -> Prepared:
    """Compile a spec: the live campaigns' rules, the actions, the policy's model."""
    plan = Plan.model_validate(spec.plan)
    schema = rule_schema(spec.attributes)
    actions = build_actions(plan, spec.day)
    rules = []
    for camp in actions.campaigns:
        try:
            rules.append(Rule.compile(camp.target, schema))
        except RuleError as exc:
            raise PlanError(f"campaign {camp.id!r} target: {exc}") from None
    policy = _policy(spec, actions)
    apprentice = None
    if spec.apprentice is not None:
        a = spec.apprentice
        apprentice = versions.instantiate(a.kind, a.params, a.state)
    journeys = journey_plans(list(plan.journeys), actions)
    journey_rules = []
    for jp in journeys:
        pair = []
        for trigger in (jp.spec.entry, jp.spec.exit):
            rule = None
            if trigger is not None and trigger.rule is not None:
                try:
                    rule = Rule.compile(trigger.rule, schema)
                except RuleError as exc:
                    raise PlanError(f"journey {jp.id!r} rule: {exc}") from None
            pair.append(rule)
        journey_rules.append((pair[0], pair[1]))
    names = spec.context_names
    needed = frozenset().union(
        *(r.fields for r in rules),
        *(r.fields for pair in journey_rules for r in pair if r is not None),
        context_fields([n for n in names if not is_contact(n)]),
    )
    setup = RunSetup(
        day=spec.day,
        actions=actions,
        rules=rules,
        caps=tuple(plan.caps),
        exclusions=tuple(plan.exclusions),
        global_control_fraction=plan.settings.global_control_fraction,
        policy=policy,
        journeys=journeys,
    )
    max_window = max((c.measurement_days for c in plan.campaigns), default=1)
    return Prepared(spec, plan, setup, schema, needed, max_window, apprentice, tuple(journey_rules))


def _policy(spec: RunSpec, actions: ActionSet) -> Policy:
    p = spec.policy
    policy = versions.instantiate(p.kind, p.params, p.state)
    if spec.cold_start is not None and actions.no_send is not None:
        return ColdStart(explore=spec.cold_start, no_send=actions.features[actions.no_send])
    return policy


@lru_cache(maxsize=4)
def _materialized(raw: bytes) -> Prepared:
    return materialize(RunSpec.from_json(raw))


def materialize_cached(raw: bytes) -> Prepared:
    """``materialize`` of a serialized spec, compiled once per process (workers decide many
    partitions of one run)."""
    return _materialized(raw)


# --- the result ------------------------------------------------------------------------------


@dataclass
class RunCounts:
    """The run's summary: customers, decisions by (campaign, treatment, reason, group), and the
    stage that removed the last option of targeted customers. Counts of slices add up."""

    customers: int = 0
    targeted: int = 0
    decided: int = 0
    global_control: int = 0
    by_action: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)  # stage -> customers emptied
    apprentice: dict[str, list[int]] = field(default_factory=dict)  # reason -> [agree, total]

    def add(self, other: RunCounts) -> None:
        self.customers += other.customers
        self.targeted += other.targeted
        self.decided += other.decided
        self.global_control += other.global_control
        self.by_action.update(other.by_action)
        self.suppressed.update(other.suppressed)
        for reason, (agree, total) in other.apprentice.items():
            cur = self.apprentice.setdefault(reason, [0, 0])
            cur[0] += agree
            cur[1] += total

    @classmethod
    def of(
        cls, dec: BatchDecisions, acts: ActionSet, apprentice: dict[str, list[int]]
    ) -> RunCounts:
        out = cls(
            customers=len(dec.action),
            targeted=int(dec.targeted.sum()),
            decided=int(dec.decided.sum()),
            global_control=int(dec.in_global_control.sum()),
            apprentice=apprentice,
        )
        hit = dec.suppressed_by[dec.suppressed_by >= 0]
        for si, n in enumerate(np.bincount(hit, minlength=len(STAGE_NAMES)).tolist()):
            if n:
                out.suppressed[STAGE_NAMES[si]] += n
        d = dec.decided
        if d.any():
            combos = np.stack([dec.action[d], dec.reason[d], dec.group[d]], axis=1)
            values, freq = np.unique(combos, axis=0, return_counts=True)
            for (a, r, g), n in zip(values.tolist(), freq.tolist(), strict=True):
                c = int(acts.campaign_of[a])
                camp = acts.campaigns[c].id if c >= 0 else ""
                key = (camp, acts.treatment_ids[a] or "", REASONS[r], GROUPS[g])
                out.by_action[key] += n
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "targeted": self.targeted,
            "decided": self.decided,
            "global_control": self.global_control,
            "by_action": [
                {"campaign": c, "treatment": t, "reason": r, "group": g, "decisions": n}
                for (c, t, r, g), n in sorted(self.by_action.items())
            ],
            "suppressed": {s: self.suppressed[s] for s in STAGE_NAMES if self.suppressed[s]},
            "apprentice": self.apprentice,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunCounts:
        by_action: Counter[tuple[str, str, str, str]] = Counter()
        raw = data.get("by_action", [])
        if isinstance(raw, dict):  # written before 0.2: "campaign|treatment|reason|group" keys
            for key, n in raw.items():
                c, t, r, g = key.split("|")
                by_action[(c, t, r, g)] += n
        else:
            for row in raw:
                key = (row["campaign"], row["treatment"], row["reason"], row["group"])
                by_action[key] += row["decisions"]
        return cls(
            customers=data.get("customers", 0),
            targeted=data.get("targeted", 0),
            decided=data.get("decided", 0),
            global_control=data.get("global_control", 0),
            by_action=by_action,
            suppressed=Counter(data.get("suppressed", {})),
            apprentice={k: list(v) for k, v in data.get("apprentice", {}).items()},
        )


DECISION_COLUMNS = (
    "run_date",
    "customer_id",
    "campaign_id",
    "treatment_id",
    "channel",
    "group",
    "propensity",
    "split_share",
    "reason",
    "policy_name",
    "policy_version_id",
    "window_end",
    "batch",
    "journey_id",
    "journey_step",
)


@dataclass
class PartitionResult:
    """What one slice decided: the decided customers' ``rows`` (``DECISION_COLUMNS`` order, one
    per decided customer), their ``contexts (m, d)`` and ``eligible (m, A)`` for learning, the
    ``counts``, and the batch as arrays (``decisions``) for `orch explain` and tests."""

    customer_ids: list[str]
    action: np.ndarray  # (m,) action index of each decided customer
    rows: list[tuple[Any, ...]]
    contexts: np.ndarray
    eligible: np.ndarray
    counts: RunCounts
    decisions: BatchDecisions


def decide_partition(
    prepared: Prepared,
    customers: Any,
    contacts: History,
    *,
    batch: int = 0,
    journeys: JourneyInput | None = None,
    explain: bool = False,
) -> PartitionResult:
    """Decide for ``customers`` (ids, attributes, feature columns) given their ``contacts``;
    ``batch`` is the number logged with the rows.

    Pure: reads nothing and writes nothing; the same customers give the same result in any
    slice of the run."""
    dec = decide_raw(prepared, customers, contacts, journeys=journeys, explain=explain)
    acts, day = prepared.setup.actions, prepared.setup.day
    counts = RunCounts.of(dec, acts, apprentice_agreement(prepared, dec))
    rows = np.flatnonzero(dec.decided)
    ids = customers.ids
    decided_ids = [ids[i] for i in rows.tolist()]
    return PartitionResult(
        customer_ids=decided_ids,
        action=dec.action[rows],
        rows=_decision_rows(dec, rows, decided_ids, acts, day, prepared, batch),
        contexts=dec.contexts[rows],
        eligible=dec.eligible[rows],
        counts=counts,
        decisions=dec,
    )


def decide_raw(
    prepared: Prepared,
    raw: Any,
    history: History,
    *,
    journeys: JourneyInput | None = None,
    explain: bool = False,
) -> BatchDecisions:
    """The batch's columns, contexts and draws, then ``decide_batch``."""
    setup, spec = prepared.setup, prepared.spec
    columns = build_columns(
        raw.attributes, raw.features, prepared.schema, prepared.needed, setup.day, len(raw)
    )
    names = prepared.context_names
    own = [j for j, name in enumerate(names) if not is_contact(name)]
    contexts = np.empty((len(raw), len(names)), dtype=np.float32)
    contexts[:, own] = context_matrix(columns, [names[j] for j in own], len(raw))
    contact = [j for j, name in enumerate(names) if is_contact(name)]
    contexts[:, contact] = contact_features(history, len(raw), [names[j] for j in contact])
    salt = prepared.plan.settings.salt
    keys = raw.keys  # hashed by the batch reader, beside this process
    if keys is None or raw.key_salt != salt:
        keys = customer_keys(raw.ids, salt)
    draws = Draws.for_run(keys, seed=spec.seed, day=spec.day)
    view = contexts
    if prepared.policy_names is not None:
        view = align(contexts, prepared.context_names, prepared.policy_names)
    if journeys is None and setup.journeys:
        journeys = JourneyInput(
            [JourneyState.empty(len(raw)) for _ in setup.journeys],
            [np.full(len(raw), -1, dtype=np.int64) for _ in setup.journeys],
            [np.full(len(raw), -1, dtype=np.int64) for _ in setup.journeys],
        )
    if journeys is not None:
        n = len(raw)
        journeys.entry_rule = [
            e.evaluate(columns, n) if e else None for e, _ in prepared.journey_rules
        ]
        journeys.exit_rule = [
            x.evaluate(columns, n) if x else None for _, x in prepared.journey_rules
        ]
    inp = BatchInput(keys, columns, view, history, draws, journeys)
    dec = decide_batch(setup, inp, explain=explain)
    dec.contexts = contexts  # log everything that was built, whatever the policy used
    return dec


def apprentice_agreement(prepared: Prepared, dec: BatchDecisions) -> dict[str, list[int]]:
    """How often the apprentice's favourite eligible action equals the decision, by reason."""
    app = prepared.apprentice
    rows = np.flatnonzero(dec.decided)
    if app is None or not len(rows):
        return {}
    view = dec.contexts[rows]
    trained = prepared.spec.apprentice.trained_names if prepared.spec.apprentice else None
    if trained is not None:
        view = align(view, prepared.context_names, trained)
    dist = app.action_dist(view, prepared.setup.actions.features, dec.eligible[rows])
    agree = dist.argmax(axis=1) == dec.action[rows]
    out: dict[str, list[int]] = {}
    for code, name in REASONS.items():
        mask = dec.reason[rows] == code
        if mask.any():
            out[name] = [int(agree[mask].sum()), int(mask.sum())]
    return out


def _decision_rows(
    dec: BatchDecisions,
    rows: np.ndarray,
    ids: list[str],
    acts: ActionSet,
    day: date,
    prepared: Prepared,
    batch: int,
) -> list[tuple[Any, ...]]:
    """Decision rows in ``DECISION_COLUMNS`` order."""
    run_date = day.isoformat()
    camp_ids = [c.id for c in acts.campaigns] + [None]  # index -1: send nothing
    channels = [c.channel for c in acts.campaigns] + [None]
    ends = {
        int(d): (day + timedelta(days=int(d))).isoformat()
        for d in set(dec.window_days[rows].tolist())
    }
    name, version = prepared.policy_name, prepared.policy_version_id
    journey_ids = [jp.id for jp in prepared.setup.journeys] + [None]  # index -1: none
    j = dec.journey[rows] if dec.journey is not None else np.full(len(rows), -1)
    k = dec.journey_step[rows] + 1 if dec.journey_step is not None else np.zeros(len(rows))
    return [
        (
            run_date,
            cid,
            camp_ids[c],
            acts.treatment_ids[a],
            channels[c],
            GROUPS[g],
            p,
            s,
            REASONS[r],
            name,
            version,
            ends[w],
            batch,
            journey_ids[jj],
            kk if jj >= 0 else None,
        )
        for cid, a, c, g, p, s, r, w, jj, kk in zip(
            ids,
            dec.action[rows].tolist(),
            dec.campaign[rows].tolist(),
            dec.group[rows].tolist(),
            dec.propensity[rows].tolist(),
            dec.split_share[rows].tolist(),
            dec.reason[rows].tolist(),
            dec.window_days[rows].tolist(),
            j.tolist(),
            k.tolist(),
            strict=True,
        )
    ]
