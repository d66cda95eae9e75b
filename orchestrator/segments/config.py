"""Segmentation settings: lifecycle thresholds, RFM cells, the value model's horizon and unit.

Every field has a default a retention marketer would accept; ``docs/segments.md`` describes each.
A file given to ``orch segments refresh --config FILE`` (YAML or JSON) overrides any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import InputError
from orchestrator.features import RFM_CELLS

SCORE_LEVELS = 5  # quintile scores 1..5


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LifecycleConfig(_Strict):
    """Day thresholds of the lifecycle stages (see :mod:`orchestrator.segments.lifecycle`)."""

    new_days: int = Field(
        default=30, ge=0, description="'new': first purchase at most this many days ago."
    )
    active_days: int = Field(
        default=90, ge=0, description="'active': last purchase at most this many days ago."
    )
    lapsed_days: int = Field(
        default=180,
        ge=0,
        description="'lapsed': last purchase more than this many days ago ('at_risk' between).",
    )
    reactivation_gap_days: int = Field(
        default=180, ge=1, description="A purchase after a longer gap than this is a comeback."
    )
    reactivated_days: int = Field(
        default=30, ge=0, description="'reactivated': a comeback at most this many days ago."
    )

    @model_validator(mode="after")
    def _ordered(self) -> LifecycleConfig:
        if not self.active_days <= self.lapsed_days:
            raise ValueError(
                f"active_days ({self.active_days}) must not exceed lapsed_days ({self.lapsed_days})"
            )
        return self


class RfmCell(_Strict):
    """A named cell: customers whose R score and second-axis score are in both ranges."""

    name: str = Field(min_length=1, max_length=32)
    r: tuple[int, int] = Field(description="Inclusive range of R scores, e.g. [4, 5].")
    fm: tuple[int, int] = Field(description="Inclusive range of the second-axis score.")

    @model_validator(mode="after")
    def _ranges(self) -> RfmCell:
        for label, (lo, hi) in (("r", self.r), ("fm", self.fm)):
            if not 1 <= lo <= hi <= SCORE_LEVELS:
                raise ValueError(
                    f"cell {self.name!r}: {label} range [{lo}, {hi}] must be within "
                    f"[1, {SCORE_LEVELS}] and ordered"
                )
        return self


def _cell(name: str, r: tuple[int, int], fm: tuple[int, int]) -> RfmCell:
    return RfmCell(name=name, r=r, fm=fm)


# The usual R x FM grid (first match wins); every one of the 25 score pairs has a cell.
DEFAULT_CELLS: tuple[RfmCell, ...] = (
    _cell("champions", (5, 5), (4, 5)),
    _cell("loyal", (3, 4), (4, 5)),
    _cell("potential_loyalist", (4, 5), (2, 3)),
    _cell("new_customers", (5, 5), (1, 1)),
    _cell("promising", (4, 4), (1, 1)),
    _cell("need_attention", (3, 3), (3, 3)),
    _cell("about_to_sleep", (3, 3), (1, 2)),
    _cell("at_risk", (1, 2), (3, 4)),
    _cell("cannot_lose", (1, 2), (5, 5)),
    _cell("hibernating", (2, 2), (1, 2)),
    _cell("lost", (1, 1), (1, 2)),
)
assert tuple(c.name for c in DEFAULT_CELLS) == RFM_CELLS


class RfmConfig(_Strict):
    """How RFM scores become named cells."""

    second_axis: Literal["fm", "f"] = Field(
        default="fm",
        description="Second grid axis: 'fm' = round-half-up mean of F and M scores, 'f' = F.",
    )
    cells: tuple[RfmCell, ...] = Field(
        default=DEFAULT_CELLS, description="Named cells, first match wins; must cover the grid."
    )

    @model_validator(mode="after")
    def _covers_grid(self) -> RfmConfig:
        missing = [
            (r, fm)
            for r in range(1, SCORE_LEVELS + 1)
            for fm in range(1, SCORE_LEVELS + 1)
            if not any(c.r[0] <= r <= c.r[1] and c.fm[0] <= fm <= c.fm[1] for c in self.cells)
        ]
        if missing:
            listed = ", ".join(f"R{r}/FM{fm}" for r, fm in missing[:5])
            raise ValueError(f"cells leave {len(missing)} score pairs without a cell: {listed}")
        return self


class ModelConfig(_Strict):
    """The predicted-value models: BG/NBD for purchases, Gamma-Gamma for order values."""

    time_unit: Literal["days", "weeks"] = Field(
        default="days", description="Time unit of the fitted BG/NBD rates (alpha)."
    )
    horizon_days: int = Field(
        default=90, ge=1, le=3650, description="Horizon of expected purchases and value."
    )
    min_customers: int = Field(
        default=20,
        ge=2,
        description="Fewest customers (repeat customers for Gamma-Gamma) to fit a model.",
    )
    max_iterations: int = Field(default=500, ge=10, description="Optimizer iteration limit.")


class MicroConfig(_Strict):
    """Behaviour clusters inside each lifecycle stage (see :mod:`orchestrator.segments.micro`)."""

    enabled: bool = Field(default=True, description="Compute micro-segments at each refresh.")
    min_clusters: int = Field(default=2, ge=1, le=50, description="Fewest clusters per stage.")
    max_clusters: int = Field(default=8, ge=1, le=50, description="Most clusters per stage.")
    keep_margin: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="Keep the last refresh's cluster count unless another beats its silhouette "
        "by more than this.",
    )
    fit_sample: int = Field(
        default=50_000, ge=100, description="Customers per stage the clusters are fitted on."
    )
    seed: int = Field(default=0, description="Seed of the sampling and the k-means starts.")

    @model_validator(mode="after")
    def _ordered(self) -> MicroConfig:
        if self.min_clusters > self.max_clusters:
            raise ValueError(
                f"min_clusters ({self.min_clusters}) must not exceed max_clusters "
                f"({self.max_clusters})"
            )
        return self


class SegmentConfig(_Strict):
    """Everything the refresh can be told; the defaults are what `orch segments refresh` uses."""

    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    rfm: RfmConfig = Field(default_factory=RfmConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    micro: MicroConfig = Field(default_factory=MicroConfig)


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def load_config(
    path: str | Path | None = None,
    *,
    horizon_days: int | None = None,
    time_unit: str | None = None,
    base: dict[str, Any] | None = None,
) -> SegmentConfig:
    """The defaults, overridden by ``base`` (the plan's ``settings.segments``), by a YAML or
    JSON file and then by the command-line options; a section of the file replaces the plan's
    section of the same name.

    Raises :class:`InputError` with one line naming the file, field or option at fault.
    """
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"--config: cannot read {str(path)!r}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise InputError(f"--config: {path} is not valid YAML or JSON ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError(f"--config: {path} must hold a mapping of settings")
        data.update(loaded or {})
    try:
        config = SegmentConfig.model_validate(data)
    except ValidationError as exc:
        where = path if path is not None else "the plan's settings.segments"
        raise InputError(f"{where}: {first_error(exc)}") from None
    options: dict[str, Any] = {}
    if horizon_days is not None:
        options["horizon_days"] = horizon_days
    if time_unit is not None:
        options["time_unit"] = time_unit
    if not options:
        return config
    try:
        model = ModelConfig.model_validate({**config.model.model_dump(), **options})
    except ValidationError as exc:
        err = exc.errors()[0]
        option = "--" + str(err["loc"][0]).replace("_", "-")
        raise InputError(f"{option}: {err['msg']} (got {err['input']!r})") from None
    return config.model_copy(update={"model": model})
