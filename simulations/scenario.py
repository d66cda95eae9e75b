"""Scenario files of the synthetic world: who the customers are and what really works on them.

A scenario (``simulations/scenarios/<name>.yaml``) holds the hidden personas, the engine's plan,
the marketer's ranking of the campaigns and the ground-truth effect of every action. It is
loaded by :func:`load_scenario` and validated as a whole; every problem names the file, the
line and the field. :mod:`simulations.world` turns it into customers and their purchases.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import InputError, PlanError
from orchestrator.plan import Plan, PlanSource, check_plan

SCENARIO_DIR = Path(__file__).parent / "scenarios"
SLUG = r"^[a-z0-9][a-z0-9_\-]{0,63}$"


class ScenarioError(InputError):
    """A scenario file that cannot be read or does not make sense."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A bool attribute is a probability; a number is [mean, sd] or [mean, sd, min, max] (normal,
# rounded to an integer, clipped); a string is {value: probability}.
AttributeSpec = float | list[float] | dict[str, float]


class PersonaSpec(_Strict):
    """A hidden kind of customer; each customer draws its own rate and order value around it."""

    id: str = Field(pattern=SLUG)
    share: float = Field(gt=0, le=1)
    purchase_rate: float = Field(gt=0, lt=0.5, description="Mean daily purchase probability.")
    rate_shape: float = Field(default=2.0, gt=0, description="Gamma shape of customers' rates.")
    order_value: float = Field(gt=0, description="Mean order value (lognormal per customer).")
    value_sd: float = Field(default=0.4, ge=0, le=2, description="Sd of log order value.")
    churned_share: float = Field(default=0.0, ge=0, le=1)
    churn_window: tuple[int, int] | None = Field(
        default=None, description="Days before start between which churns happen (to, from)."
    )
    tenure: tuple[int, int] = Field(
        default=(60, 2000), description="Days before start the customer signed up: [min, max]."
    )
    discount_share: float = Field(
        default=0.1, ge=0, le=1, description="Share of past purchases made with a discount."
    )
    attributes: dict[str, AttributeSpec] = Field(default_factory=dict)
    categories: dict[str, float] = Field(default_factory=dict)
    channels: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ranges(self) -> PersonaSpec:
        lo, hi = self.tenure
        if not 0 <= lo <= hi:
            raise ValueError(f"tenure must be [min, max] with 0 <= min <= max (got {[lo, hi]})")
        if self.churn_window and not 0 <= self.churn_window[0] <= self.churn_window[1]:
            raise ValueError(f"churn_window must be [near, far] days (got {self.churn_window})")
        for name, mix in (("categories", self.categories), ("channels", self.channels)):
            if mix and (min(mix.values()) < 0 or abs(sum(mix.values()) - 1) > 1e-6):
                raise ValueError(f"{name} must be non-negative shares summing to 1")
        return self


class EffectSpec(_Strict):
    """The truth of one action: extra purchase probability per persona, discount, horizon."""

    lift: dict[str, float] = Field(
        default_factory=dict,
        description="Persona -> total extra purchase probability (0 if absent).",
    )
    discount: float | None = Field(default=None, ge=0, lt=1)
    horizon: int | None = Field(default=None, ge=1, le=120)


class FatigueSpec(_Strict):
    """Lift of a send x exp(-per_contact x contacts on the ``days`` days before it)."""

    per_contact: float = Field(default=0.3, ge=0)
    days: int = Field(default=14, ge=1, le=365)


class SeasonalitySpec(_Strict):
    """Base rate x (1 + weekly x cos(2 pi (weekday - peak_weekday) / 7)); weekday 0 is Monday."""

    weekly: float = Field(default=0.0, ge=0, lt=1)
    peak_weekday: int = Field(default=5, ge=0, le=6)


class Scenario(_Strict):
    version: Literal[1]
    name: str = Field(pattern=SLUG)
    description: str = ""
    customers: int = Field(ge=1)
    days: int = Field(ge=1)
    seed: int = Field(ge=0)
    start: date
    drift_day: int | None = Field(default=None, ge=0)
    history_days: int = Field(default=365, ge=1, le=3650)
    kernel_decay: float = Field(
        default=0.8, gt=0, le=1, description="Geometric decay of the lift over the horizon."
    )
    amount_noise: float = Field(default=0.3, ge=0, le=2, description="Sd of log order noise.")
    churn_factor: float = Field(default=0.1, ge=0, le=1, description="Rate kept after a churn.")
    max_rate: float = Field(default=0.5, gt=0, le=0.8, description="Cap on customers' rates.")
    history_discounts: list[float] = Field(default=[0.1, 0.15, 0.2, 0.3], min_length=1)
    seasonality: SeasonalitySpec = Field(default_factory=SeasonalitySpec)
    fatigue: FatigueSpec = Field(default_factory=FatigueSpec)
    personas: list[PersonaSpec] = Field(min_length=1)
    plan: dict[str, Any]
    marketer_ranking: list[str] = Field(default_factory=list)
    effects: dict[str, EffectSpec]
    after_drift: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Label -> persona -> lift replacing it from drift_day."
    )
    entry_events: dict[str, float] = Field(
        default_factory=dict,
        description="Event type -> daily probability per customer: what journeys start on "
        "(cart_abandoned, signup...), imported each day with the purchases.",
    )

    def plan_model(self) -> Plan:
        """Return the plan as the engine's validated model."""
        return Plan.model_validate(self.plan)

    def persona_ids(self) -> list[str]:
        """Return the persona ids in file order."""
        return [p.id for p in self.personas]


def list_scenarios() -> list[str]:
    """Return the names of the scenarios shipped in ``simulations/scenarios``."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load and validate a scenario by name (``standard``) or by path (``my/world.yaml``)."""
    text_name = str(name_or_path)
    is_path = text_name.endswith((".yaml", ".yml")) or "/" in text_name
    path = Path(text_name) if is_path else SCENARIO_DIR / f"{text_name}.yaml"
    if not path.exists():
        known = ", ".join(list_scenarios())
        raise ScenarioError(f"{path}: no such scenario (shipped ones: {known})")
    return parse_scenario(path.read_text(encoding="utf-8"), name=str(path))


def parse_scenario(text: str, *, name: str = "<scenario>") -> Scenario:
    """Parse scenario YAML; raise ``ScenarioError`` listing every problem with file:line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{name}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{name}: a scenario is a mapping with name, personas, plan, ...")
    source = PlanSource(name, text, data)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [
            source.problem(tuple(e["loc"]), str(e["msg"]).removeprefix("Value error, "))
            for e in exc.errors()
        ]
        raise ScenarioError("\n".join(problems)) from None
    problems = _check(scenario, source)
    if problems:
        raise ScenarioError("\n".join(problems))
    return scenario


def plan_labels(plan: Plan) -> list[str]:
    """Return every action label ``campaign/treatment`` of a plan, in plan order."""
    return [f"{c.id}/{t.id}" for c in plan.campaigns for t in c.treatments]


def _check(s: Scenario, source: PlanSource) -> list[str]:
    """Check what no single field can: shares, the plan, attributes, labels, personas."""
    problems: list[str] = []

    def add(loc: tuple[Any, ...], message: str) -> None:
        problems.append(source.problem(loc, message))

    ids = s.persona_ids()
    if len(set(ids)) != len(ids):
        add(("personas",), "persona ids must be unique")
    if abs(sum(p.share for p in s.personas) - 1) > 1e-6:
        add(("personas",), f"persona shares must sum to 1 (got {sum(p.share for p in s.personas)})")
    if s.drift_day is None and s.after_drift:
        add(("after_drift",), "after_drift needs a drift_day")
    try:
        plan = s.plan_model()
        check_plan(plan)
    except (ValidationError, PlanError) as exc:
        add(("plan",), f"the plan does not validate: {exc}")
        return problems

    for i, persona in enumerate(s.personas):
        for attr, spec in persona.attributes.items():
            kind = plan.attributes.get(attr)
            loc = ("personas", i, "attributes", attr)
            if kind is None:
                add(loc, f"attribute {attr!r} is not declared in plan.attributes")
            elif not _fits(kind, spec):
                add(loc, f"a {kind} attribute needs {_SHAPES.get(kind, 'no spec')}")
        for attr in plan.attributes:
            if attr not in persona.attributes:
                add(("personas", i, "attributes"), f"attribute {attr!r} is missing")

    labels = plan_labels(plan)
    campaigns = {c.id: c for c in plan.campaigns}
    for label in labels:
        if label not in s.effects:
            add(("effects",), f"no effect for action {label!r}")
    for label, effect in s.effects.items():
        if label not in labels:
            add(("effects", label), f"{label!r} is not a campaign/treatment of the plan")
            continue
        for persona_id in effect.lift:
            if persona_id not in ids:
                add(("effects", label, "lift", persona_id), f"unknown persona {persona_id!r}")
        cid, tid = label.split("/")
        treatment = next(t for t in campaigns[cid].treatments if t.id == tid)
        feature = treatment.features.get("discount")
        plan_discount = float(feature) if isinstance(feature, int | float) else None
        if None not in (effect.discount, plan_discount) and plan_discount != effect.discount:
            add(
                ("effects", label, "discount"),
                f"{effect.discount} differs from the plan's features.discount {feature}",
            )
    for label, lifts in s.after_drift.items():
        if label not in labels:
            add(("after_drift", label), f"{label!r} is not a campaign/treatment of the plan")
        for persona_id in lifts:
            if persona_id not in ids:
                add(("after_drift", label, persona_id), f"unknown persona {persona_id!r}")
    for i, cid in enumerate(s.marketer_ranking):
        if cid not in campaigns:
            add(("marketer_ranking", i), f"no campaign {cid!r} in the plan")
        elif s.marketer_ranking.index(cid) != i:
            add(("marketer_ranking", i), f"campaign {cid!r} is ranked twice")
    return problems


_SHAPES = {
    "bool": "a probability in [0, 1]",
    "number": "[mean, sd] or [mean, sd, min, max]",
    "string": "a mapping {value: probability} summing to 1",
}


def _fits(kind: str, spec: AttributeSpec) -> bool:
    if kind == "bool":
        return isinstance(spec, int | float) and 0 <= spec <= 1
    if kind == "number":
        return isinstance(spec, list) and len(spec) in (2, 4) and spec[1] >= 0
    if kind == "string":
        return (
            isinstance(spec, dict)
            and min(spec.values(), default=-1) >= 0
            and abs(sum(spec.values()) - 1) <= 1e-6
        )
    return False
