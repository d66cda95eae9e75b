"""The plan file: what the marketing team decides, as validated pydantic models.

A plan is loaded from YAML (``load_plan_file``), checked field by field by pydantic and then as a
whole by ``check_plan`` (duplicate ids, exclusions that name unknown campaigns, target rules that
use unknown fields...). Every problem is reported with the file, the line and the field path.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.errors import PlanError, RuleError
from orchestrator.features import COMPUTED_FEATURES, FIELD_TYPES, builtin_schema, rule_schema

SLUG = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
FieldType = Literal["bool", "number", "string", "date"]
Scalar = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=False, validate_assignment=True, allow_inf_nan=False
    )


class TreatmentSpec(_Strict):
    """One variant of a campaign; a (campaign, treatment) pair is an action."""

    id: str = Field(pattern=SLUG)
    cost: float = Field(default=0.0, ge=0, description="Unit cost per send (discount, SMS fee).")
    features: dict[str, Scalar] = Field(default_factory=dict)
    payload: dict[str, Any] = Field(default_factory=dict)


class CampaignSpec(_Strict):
    id: str = Field(pattern=SLUG)
    name: str = Field(default="", max_length=200)  # the sizes of the columns that store them
    channel: str = Field(pattern=SLUG, max_length=32)
    status: Literal["active", "paused", "archived"] = "active"
    start: date | None = None
    end: date | None = None
    target: str = "true"
    priority: int | None = Field(default=None, ge=1)
    measurement_days: int = Field(default=7, ge=1, le=365)
    cooldown_days: int = Field(default=0, ge=0, le=3650)
    control_fraction: float = Field(default=0.1, ge=0, lt=1)
    measured: bool = True
    description: str | None = None
    treatments: list[TreatmentSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> CampaignSpec:
        if not self.name:
            self.name = self.id
        if self.start and self.end and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        dupes = [t for t, n in Counter(t.id for t in self.treatments).items() if n > 1]
        if dupes:
            raise ValueError(f"treatment id {dupes[0]!r} appears twice")
        return self


class CapSpec(_Strict):
    """At most ``max`` contacts in any rolling ``per_days`` days, overall or on one channel."""

    scope: Literal["global", "channel"]
    channel: str | None = Field(default=None, pattern=SLUG, max_length=32)
    max: int = Field(ge=1)
    per_days: int = Field(ge=1, le=3650)

    @model_validator(mode="after")
    def _channel_matches_scope(self) -> CapSpec:
        if self.scope == "channel" and not self.channel:
            raise ValueError("a channel cap needs `channel`")
        if self.scope == "global" and self.channel:
            raise ValueError("a global cap takes no `channel`")
        return self

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scope, self.channel or "", self.per_days)


class ExclusionSpec(_Strict):
    """Having received ``if_received`` in the last ``days`` days excludes ``exclude``."""

    if_received: str = Field(pattern=SLUG)
    exclude: str = Field(pattern=SLUG)
    days: int = Field(ge=1, le=3650)


class JourneyTrigger(_Strict):
    """What starts (or ends) a journey: an event type, or a target rule becoming true."""

    event: str | None = Field(default=None, pattern=SLUG)
    rule: str | None = None

    @model_validator(mode="after")
    def _one(self) -> JourneyTrigger:
        if (self.event is None) == (self.rule is None):
            raise ValueError("give exactly one of `event` or `rule`")
        return self


class JourneyStep(_Strict):
    """One send of a journey, ``day`` days after the customer entered it."""

    day: int = Field(ge=0, le=3650)
    campaign: str = Field(pattern=SLUG)
    treatment: str | None = Field(default=None, pattern=SLUG)
    when_blocked: Literal["defer", "skip"] = "defer"


class ReentryAfter(_Strict):
    after_days: int = Field(ge=1, le=3650)


class JourneySpec(_Strict):
    """A time-bound flow: customers enter on an event or a rule, get its steps at their day
    offsets ahead of the policy, and leave on an exit event or rule, or after the last step."""

    id: str = Field(pattern=SLUG)
    name: str = ""
    status: Literal["active", "paused"] = "active"
    entry: JourneyTrigger
    exit: JourneyTrigger | None = None
    reentry: Literal["never"] | ReentryAfter = "never"
    entry_within_days: int = Field(
        default=3, ge=1, le=365, description="An entry event counts this many days after it."
    )
    control_fraction: float = Field(default=0.1, ge=0, lt=1)
    priority: int | None = Field(
        default=None,
        ge=1,
        description="Among manual priorities (lower wins); none: ahead of every campaign.",
    )
    cap_exempt: bool = False
    defer_days: int = Field(
        default=2, ge=0, le=365, description="How long a blocked `defer` step waits."
    )
    steps: list[JourneyStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> JourneySpec:
        if not self.name:
            self.name = self.id
        days = [s.day for s in self.steps]
        for i in range(1, len(days)):
            if days[i] <= days[i - 1]:
                raise ValueError(
                    f"step {i + 1} is on day {days[i]}, not after step {i} (day {days[i - 1]}):"
                    " step days must increase"
                )
        return self


class PolicySettings(_Strict):
    name: str = "uniform"
    params: dict[str, Any] = Field(default_factory=dict)
    promote_when: Literal[
        "not_worse_than_active", "estimate_beats_active", "lcb_beats_active", "manual"
    ] = "not_worse_than_active"
    evaluation_holdout: float = Field(
        default=0.2, gt=0, lt=1, description="Share of customers kept out of training for OPE."
    )
    apprentice: str | None = Field(
        default=None, description="A policy that learns from every decision without acting."
    )
    cold_start_explore: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Until a version of a learning policy is active: the share of customers it "
        "explores on (uniformly); the others get 'send nothing'. 1 explores on everyone.",
    )


class BandSpec(_Strict):
    """Named ranges of a number for reports (``orch report customers --by NAME``)."""

    field: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The number to cut.")
    edges: list[float] | None = Field(
        default=None,
        min_length=1,
        description="Increasing upper bounds (a value v is in the first bin with v <= edge; "
        "above the last, the last bin); none: quintiles.",
    )
    labels: list[str] | None = Field(default=None, description="One per bin: len(edges) + 1.")

    @model_validator(mode="after")
    def _consistent(self) -> BandSpec:
        steps = zip(self.edges or [], (self.edges or [])[1:], strict=False)
        if any(b <= a for a, b in steps):
            raise ValueError(f"edges must increase, got {self.edges}")
        if self.labels is not None:
            if self.edges is None:
                raise ValueError("labels need edges (quintile bands are labelled by their range)")
            if len(self.labels) != len(self.edges) + 1:
                raise ValueError(
                    f"{len(self.edges)} edges make {len(self.edges) + 1} bins, got "
                    f"{len(self.labels)} labels"
                )
        return self


class AttributeRange(_Strict):
    """The values a number or date attribute may take; an import refuses a value outside."""

    min: float | date | None = None
    max: float | date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AttributeRange:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if (
            self.min is not None
            and self.max is not None
            and type(self.min) is type(self.max)
            and self.min > self.max  # type: ignore[operator]
        ):
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class PlanSettings(_Strict):
    timezone: str = "UTC"
    run_at: str = Field(
        default="06:00",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="When the daemon runs the day (HH:MM, in the plan's time zone).",
    )
    global_control_fraction: float = Field(default=0.05, ge=0, lt=1)
    allow_no_send: bool = True
    no_send_measurement_days: int = Field(
        default=7, ge=1, le=365, description="Outcome window of a 'send nothing' decision."
    )
    salt: str = Field(default="orch", min_length=1, description="Seeds test/control hashing.")
    currency: str | None = Field(
        default=None,
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 code of the amounts (EUR, USD, GBP...), named by the reports.",
    )
    policy: PolicySettings = Field(default_factory=PolicySettings)
    segments: dict[str, Any] = Field(
        default_factory=dict,
        description="Segmentation settings (lifecycle, rfm, model, micro), as in a "
        "`segments refresh --config` file; used by every refresh, the daemon's included.",
    )
    attribute_ranges: dict[str, AttributeRange] = Field(
        default_factory=dict,
        description="Declared ranges of number and date attributes: an import refuses values "
        "outside them (age: {min: 0, max: 120}).",
    )
    bands: dict[str, BandSpec] = Field(
        default_factory=dict,
        description="Report bands by name (discount_band, order_value_band are built in).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}") from None
        return value


class Plan(_Strict):
    version: Literal[1] = 1
    settings: PlanSettings = Field(default_factory=PlanSettings)
    attributes: dict[str, FieldType] = Field(default_factory=dict)
    caps: list[CapSpec] = Field(default_factory=list)
    campaigns: list[CampaignSpec] = Field(default_factory=list)
    exclusions: list[ExclusionSpec] = Field(default_factory=list)
    journeys: list[JourneySpec] = Field(default_factory=list)

    def campaign(self, campaign_id: str) -> CampaignSpec | None:
        return next((c for c in self.campaigns if c.id == campaign_id), None)

    def journey(self, journey_id: str) -> JourneySpec | None:
        return next((j for j in self.journeys if j.id == journey_id), None)


# --- loading -------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a name, not a list or a mapping", key_node.start_mark
                ) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Dates stay strings so that pydantic parses them and a bad one is reported with its line.
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map every path (keys and list indexes) in a YAML document to its 1-based line."""
    index: dict[tuple[Any, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return index

    seen: set[int] = set()

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        index[path] = node.start_mark.line + 1
        if id(node) in seen:  # an alias: its node was walked where it was defined
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = path + (key.value,)
                walk(value, child)
                index[child] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return index


def _format_path(loc: Iterable[Any], data: Any) -> str:
    """``('campaigns', 1, 'target')`` -> ``campaigns[1] (discount).target``."""
    out, node = "", data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, Mapping) and isinstance(node.get("id"), str):
                out += f" ({_shown(node['id'])})"
        else:
            out += ("." if out else "") + _shown(str(part))
            node = node.get(part) if isinstance(node, Mapping) else None
    return out or "(top level)"


def _shown(name: str) -> str:
    """A key or id as written, quoted when it is empty or holds spaces or control characters
    (an error stays on one line and says what the key really is)."""
    plain = name and name.isprintable() and not any(c.isspace() for c in name)
    return name if plain else repr(name)


class PlanSource:
    """Where a plan came from, to point problems at a file line."""

    def __init__(self, name: str, text: str, data: Any) -> None:
        self.name, self.data = name, data
        self._lines = _line_index(text)

    def where(self, loc: tuple[Any, ...]) -> str:
        for cut in range(len(loc), -1, -1):
            line = self._lines.get(tuple(loc[:cut]))
            if line is not None:
                return f"{self.name}:{line}"
        return self.name

    def problem(self, loc: tuple[Any, ...], message: str) -> str:
        where = f"{self.where(loc)}: " if self.name else ""
        return f"{where}{_format_path(loc, self.data)}: {message}"


def _pydantic_message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return "unknown field (check the spelling)"
    if err["type"] == "missing":
        return "required field is missing"
    msg = msg.removeprefix("Value error, ")
    if "input" in err and err["type"] not in ("model_type", "dict_type", "list_type"):
        value = err["input"]
        if not isinstance(value, dict | list):
            msg += f" (got {value!r})"
    return msg


MAX_PLAN_BYTES = 5_000_000
MAX_PLAN_VALUES = 200_000  # values in the document once YAML aliases are expanded


def _expanded_size(root: yaml.Node | None) -> int:
    """How many values the document holds once aliases are expanded (each node counted as
    often as it is referenced), computed without expanding them."""
    memo: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        memo[key] = 1  # a self-reference counts once
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        memo[key] = total
        return total

    return size(root) if root is not None else 0


def parse_plan_text(text: str, *, name: str = "<plan>") -> tuple[Plan, PlanSource]:
    """Parse and validate plan YAML; raise ``PlanError`` listing every field problem."""
    if len(text) > MAX_PLAN_BYTES:
        raise PlanError(
            f"{name}: the plan is {len(text) / 1e6:.1f} MB; a plan is limited to "
            f"{MAX_PLAN_BYTES // 1_000_000} MB"
        )
    try:
        # Compose first (linear in the text) and refuse documents whose aliases expand to
        # more than a plan could hold (a "billion laughs" grows exponentially).
        values = _expanded_size(yaml.compose(text, Loader=yaml.SafeLoader))
        if values > MAX_PLAN_VALUES:
            raise PlanError(
                f"{name}: the plan expands to more than {MAX_PLAN_VALUES:,} values through "
                "YAML aliases (*name); write the repeated parts out"
            )
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PlanError(f"{name}{line}: not valid YAML: {problem}") from None
    if data is None or data == {}:
        raise PlanError(f"{name}: the plan is empty (see docs/plan.md for what it holds)")
    source = PlanSource(name, text, data)
    if not isinstance(data, dict):
        raise PlanError(f"{name}: a plan is a mapping with campaigns, caps, ... at the top")
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        problems = [source.problem(tuple(e["loc"]), _pydantic_message(e)) for e in exc.errors()]
        raise plan_error(problems) from None
    return plan, source


def load_plan_file(path: str | Path) -> tuple[Plan, PlanSource]:
    """Read a plan file (``-`` for standard input)."""
    import sys

    if str(path) == "-":
        return parse_plan_text(sys.stdin.read(), name="<stdin>")
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_PLAN_BYTES:
            raise PlanError(
                f"{p}: the file is {size / 1e6:.1f} MB; a plan is limited to "
                f"{MAX_PLAN_BYTES // 1_000_000} MB"
            )
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{p}: cannot read: {exc}") from None
    return parse_plan_text(text, name=str(p))


def plan_error(problems: list[str]) -> PlanError:
    """One line for the first problem, the rest kept on the exception for `plan validate`."""
    more = f" (and {len(problems) - 1} more problem(s): run `orch plan validate`)"
    err = PlanError(problems[0] + (more if len(problems) > 1 else ""))
    err.problems = problems  # type: ignore[attr-defined]
    return err


# --- whole-plan checks ---------------------------------------------------------------------


FIELD_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def payload_fields(payload: Mapping[str, Any]) -> dict[str, str]:
    """The payload keys whose value is a customer field reference (``"{next_category}"``): the
    send list carries each customer's own value of that field there.

    >>> payload_fields({"template": "xsell", "category": "{next_category}", "n": 3})
    {'category': 'next_category'}
    """
    out: dict[str, str] = {}
    for key, value in payload.items():
        if isinstance(value, str) and (found := FIELD_REF.fullmatch(value.strip())):
            out[key] = found.group(1)
    return out


def check_plan(
    plan: Plan,
    source: PlanSource | None = None,
    *,
    known_attributes: Mapping[str, str] | None = None,
    policy_names: Iterable[str] | None = None,
) -> None:
    """Check what no single field can: ids, references, priorities, rules, policy name.

    ``known_attributes`` are attribute types already in the database (from imports); the plan's
    own ``attributes`` section adds to them and must agree with them.
    """
    src = source or PlanSource("", "", plan.model_dump(mode="json"))
    problems: list[str] = []

    def add(loc: tuple[Any, ...], message: str) -> None:
        problems.append(src.problem(loc, message))

    ids = [c.id for c in plan.campaigns]
    for i, c in enumerate(plan.campaigns):
        if ids.index(c.id) != i:
            add(("campaigns", i, "id"), f"campaign id {c.id!r} is used twice")

    owners: dict[int, str] = {}
    for i, c in enumerate(plan.campaigns):
        if c.priority is None or c.status == "archived":
            continue
        if c.priority in owners:
            add(
                ("campaigns", i, "priority"),
                f"priority {c.priority} is already given to {owners[c.priority]!r}; "
                "priorities must be distinct (lower wins)",
            )
        owners.setdefault(c.priority, c.id)

    cap_keys: set[tuple[str, str, int]] = set()
    for i, cap in enumerate(plan.caps):
        if cap.key in cap_keys:
            add(("caps", i), f"a {cap.scope} cap over {cap.per_days} days is already set")
        cap_keys.add(cap.key)

    known_ids = set(ids)
    pairs: set[tuple[str, str]] = set()
    for i, ex in enumerate(plan.exclusions):
        for fld in ("if_received", "exclude"):
            cid = getattr(ex, fld)
            if cid not in known_ids:
                add(("exclusions", i, fld), _unknown_campaign(cid, known_ids))
        if ex.if_received == ex.exclude:
            add(("exclusions", i), f"campaign {ex.exclude!r} cannot exclude itself")
        if (ex.if_received, ex.exclude) in pairs:
            add(("exclusions", i), "the same exclusion is listed twice")
        pairs.add((ex.if_received, ex.exclude))

    builtins = builtin_schema()
    attributes: dict[str, str] = dict(known_attributes or {})
    for name, dtype in plan.attributes.items():
        if name in builtins:
            add(("attributes", name), f"{name!r} is a built-in field; choose another name")
        elif name == "customer_id" or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            add(("attributes", name), f"{name!r} cannot be an attribute name")
        elif name in attributes and attributes[name] != dtype:
            add(
                ("attributes", name),
                f"declared {dtype} but the imported data holds {attributes[name]} values",
            )
        attributes[name] = dtype
    assert set(attributes.values()) <= set(FIELD_TYPES)

    from orchestrator.rules import Rule

    schema = rule_schema(attributes)
    for i, c in enumerate(plan.campaigns):
        if c.status == "archived":
            # An archived campaign never runs: its rule is checked again if it is brought back.
            # (Campaigns left out of an applied file are kept archived; their rules may name
            # attributes the new file no longer declares, and their errors are not the file's.)
            continue
        try:
            Rule.compile(c.target, schema)
        except RuleError as exc:
            add(("campaigns", i, "target"), _rule_problem(exc, c.target))
        for j, t in enumerate(c.treatments):
            for key, name in payload_fields(t.payload).items():
                if name not in attributes and name not in COMPUTED_FEATURES:
                    add(
                        ("campaigns", i, "treatments", j, "payload", key),
                        f"{{{name}}} names no stored customer field; use a computed feature "
                        "(next_category, micro_segment...) or an attribute",
                    )

    _check_journeys(plan, add, schema, owners)

    numbers = {n for n, t in {**COMPUTED_FEATURES, **attributes}.items() if t == "number"}
    for name, band in plan.settings.bands.items():
        if band.field not in numbers:
            add(
                ("settings", "bands", name, "field"),
                f"{band.field!r} is no number field (a computed feature or number attribute)",
            )

    for name, bounds in plan.settings.attribute_ranges.items():
        kind = attributes.get(name)
        where = ("settings", "attribute_ranges", name)
        wanted = date if kind == "date" else float
        if kind not in ("number", "date"):
            add(where, f"{name!r} is no number or date attribute (declared: {kind or 'none'})")
        elif any(v is not None and not isinstance(v, wanted) for v in (bounds.min, bounds.max)):
            add(where, f"{name!r} is a {kind} attribute: give {kind} bounds")

    if plan.settings.segments:
        from pydantic import ValidationError as _Invalid

        from orchestrator.segments.config import SegmentConfig, first_error

        try:
            SegmentConfig.model_validate(plan.settings.segments)
        except _Invalid as exc:
            add(("settings", "segments"), first_error(exc))

    if policy_names is not None:
        names = sorted(policy_names)
        for field_name in ("name", "apprentice"):
            chosen = getattr(plan.settings.policy, field_name)
            if chosen is not None and chosen not in names:
                add(
                    ("settings", "policy", field_name),
                    f"unknown policy {chosen!r}; choose one of {', '.join(names)}",
                )
    if problems:
        raise plan_error(problems)


def _check_journeys(
    plan: Plan,
    add: Callable[[tuple[Any, ...], str], None],
    schema: Mapping[str, str],
    priorities: Mapping[int, str],
) -> None:
    from orchestrator.rules import Rule

    campaigns = {c.id: c for c in plan.campaigns}
    seen: dict[str, int] = {}
    for i, j in enumerate(plan.journeys):
        if j.id in seen:
            add(("journeys", i, "id"), f"journey id {j.id!r} is used twice")
        seen.setdefault(j.id, i)
        if j.priority is not None and j.priority in priorities:
            add(
                ("journeys", i, "priority"),
                f"priority {j.priority} is already given to {priorities[j.priority]!r}; "
                "priorities must be distinct (lower wins)",
            )
        for k, step in enumerate(j.steps):
            camp = campaigns.get(step.campaign)
            if camp is None:
                add(
                    ("journeys", i, "steps", k, "campaign"),
                    _unknown_campaign(step.campaign, set(campaigns)),
                )
            elif step.treatment is not None and step.treatment not in {
                t.id for t in camp.treatments
            }:
                known = ", ".join(t.id for t in camp.treatments)
                add(
                    ("journeys", i, "steps", k, "treatment"),
                    f"campaign {camp.id!r} has no treatment {step.treatment!r} (it has {known})",
                )
        for name, trigger in (("entry", j.entry), ("exit", j.exit)):
            if trigger is not None and trigger.rule is not None:
                try:
                    Rule.compile(trigger.rule, schema)
                except RuleError as exc:
                    add(("journeys", i, name, "rule"), _rule_problem(exc, trigger.rule))


def _rule_problem(exc: RuleError, rule: str) -> str:
    where = f" at position {exc.position}" if exc.position is not None else ""
    return f"{exc.reason}{where} in {rule!r}"


def _unknown_campaign(cid: str, known: set[str]) -> str:
    close = difflib.get_close_matches(cid, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"no campaign with id {cid!r} in the plan{hint}"


# --- writing -------------------------------------------------------------------------------


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """A plain, readable dict: defaults that say nothing (None, empty) are left out."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    data = clean(plan.model_dump(mode="python"))
    for key in ("bands", "segments", "attribute_ranges"):
        if not data["settings"][key]:
            del data["settings"][key]
    for camp in data["campaigns"]:
        for t in camp["treatments"]:
            for key in ("features", "payload"):
                if not t[key]:
                    del t[key]
    return dict(data)


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # Double quotes escape what YAML would otherwise read back differently (NEL, LS, PS...).
    odd = not value.isprintable() or any(ch in value for ch in "\x85\u2028\u2029\ufeff")
    style = '"' if odd else ("|" if "\n" in value else None)
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_presenter)


def plan_to_yaml(plan: Plan) -> str:
    """The plan as YAML that parses back to an equal plan."""
    header = (
        "# Exported by `orch plan export`: edit, then `orch plan diff` and `orch plan apply`.\n"
    )
    body = yaml.dump(
        plan_to_dict(plan), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
    return header + body
