"""Sub-personas: an honest uplift tree that finds where a campaign works and where it does not.

The customers of one campaign (``n`` of them: a value ``y (n,)``, ``treated (n,)`` for the test
group, and split candidates) are divided at random (seeded) into two halves:

1. On the *training* half the tree is grown greedily. A candidate split is scored by the
   squared t-statistic of the difference between the two children's effects (``"interaction"``:
   the treatment-by-split interaction test of interaction trees, Su et al. 2009), or of the
   difference of the children's transformed outcomes ``y (w - p) / (p (1 - p))``
   (``"transformed"``, whose mean is the effect: Athey & Imbens 2016). A node is split only when
   its best split is significant after a Bonferroni correction over the candidates tried there,
   both children keep ``min_leaf`` customers in each arm, and the depth is below ``max_depth``.
2. On the *estimation* half, untouched by the choice of splits, each node's effect is estimated
   (difference in mean value, Welch interval). Leaves are labelled from these honest intervals.

Numbers are binned at their training-half quantiles; unknown values are a bin (or category) of
their own. Categories are ordered by their training effect at each node, then split like numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from orchestrator.measure.uplift import MIN_PER_ARM, Diff, benjamini_hochberg, welch_diff

CRITERIA = ("interaction", "transformed")

HIGHLY = "highly effective"
SOMEWHAT = "somewhat effective"
NOT_EFFECTIVE = "not effective"
HARMFUL = "harmful"
TOO_SMALL = "too small to say"
LABELS = (HIGHLY, SOMEWHAT, NOT_EFFECTIVE, HARMFUL, TOO_SMALL)


@dataclass(frozen=True)
class Feature:
    """A split candidate for ``n`` customers.

    ``kind`` is ``"number"`` (``values`` float, NaN unknown) or ``"category"`` (``values`` int
    codes into ``labels``, -1 unknown).
    """

    name: str
    kind: str
    values: np.ndarray
    labels: tuple[str, ...] = ()


@dataclass
class _Binned:
    feature: Feature
    codes: np.ndarray  # (n,) int: number bins 0..B-1 (B = unknown); category codes (L = unknown)
    n_codes: int
    edges: np.ndarray  # number cut points (B - 1,), empty for categories
    present: np.ndarray  # (n_codes,) bool: codes some customer has

    def describe(self, allowed: np.ndarray) -> str:
        """The condition that keeps the codes in ``allowed (n_codes,)`` bool, in words.

        Codes nobody has are left out, so a feature without unknowns never says "or unknown".
        """
        name = self.feature.name
        allowed = allowed & self.present
        unknown = bool(allowed[-1])
        if self.feature.kind == "number":
            real = allowed[:-1]
            if not real.any():
                return f"{name} unknown"
            idx = np.flatnonzero(real)
            lo, hi = int(idx[0]), int(idx[-1])
            parts = []
            if lo > 0:
                parts.append(f"{_num(self.edges[lo - 1])} < {name}")
            if hi < len(real) - 1:
                parts.append(f"{name} ≤ {_num(self.edges[hi])}")
            if not parts:
                text = f"{name} known"
            elif len(parts) == 2:
                text = f"{parts[0]} ≤ {_num(self.edges[hi])}"
            elif lo > 0:
                text = f"{name} > {_num(self.edges[lo - 1])}"
            else:
                text = parts[0]
            if unknown and parts:
                text += " or unknown"
            return text
        labels = [*self.feature.labels, "unknown"]
        inside = [labels[i] for i in np.flatnonzero(allowed)]
        outside = [labels[i] for i in np.flatnonzero(~allowed & self.present)]
        if len(inside) == 1:
            return f"{name} = {inside[0]}"
        if len(outside) < len(inside) and len(outside) <= 3:
            return f"{name} not in {{{', '.join(outside)}}}"
        return f"{name} in {{{', '.join(inside)}}}"

    def rule(self, allowed: np.ndarray, field: str, kind: str) -> str:
        """The same condition in the target-rule language, on rule field ``field`` of type
        ``kind`` (number, string or bool). Cuts are written exactly (``repr``), so the rule
        selects the customers the tree routes to the group."""
        allowed = allowed & self.present
        unknown = bool(allowed[-1])
        real = allowed[:-1]
        if not real.any():
            return f"{field} is null"
        if self.feature.kind == "number":
            # A split sends the bins nobody at its node has to one side, so the allowed bins can
            # have holes: one range per run of allowed bins (bins nobody has join either run).
            free = real | ~self.present[:-1]
            runs, start = [], None
            for i, ok in enumerate([*free.tolist(), False]):
                if ok and start is None:
                    start = i
                elif not ok and start is not None:
                    if real[start:i].any():
                        runs.append((start, i - 1))
                    start = None
            ranges = []
            for lo, hi in runs:
                parts = []
                if lo > 0:
                    parts.append(f"{field} > {_exact(self.edges[lo - 1])}")
                if hi < len(real) - 1:
                    parts.append(f"{field} <= {_exact(self.edges[hi])}")
                ranges.append(" and ".join(parts) or f"{field} is not null")
            text = ranges[0] if len(ranges) == 1 else " or ".join(f"({r})" for r in ranges)
        else:
            labels = list(self.feature.labels)
            inside = [labels[i] for i in np.flatnonzero(real)]
            outside = [labels[i] for i in np.flatnonzero(~real & self.present[:-1])]
            if OTHER_LABEL in inside:  # "other" is every value not listed: say what is not
                text = f"{field} not in [{', '.join(_literal(v, kind) for v in outside)}]"
                if not outside:
                    text = f"{field} is not null"
            elif kind == "bool" and len(inside) == 1:
                text = f"{field} == {_literal(inside[0], kind)}"
            else:
                text = f"{field} in [{', '.join(_literal(v, kind) for v in inside)}]"
        return f"({text} or {field} is null)" if unknown else text


OTHER_LABEL = "other"  # the category of the values beyond the most frequent (reports/personas)


def _exact(x: float) -> str:
    """The shortest text that reads back as ``x``, without an exponent (rules have none)."""
    return np.format_float_positional(float(x), unique=True, trim="-")


def _literal(label: str, kind: str) -> str:
    if kind == "bool":
        return "true" if label.lower() in ("true", "1") else "false"
    if kind == "number":
        return label
    return '"' + label.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _num(x: float) -> str:
    return f"{x:.4g}"


def _bin(feature: Feature, train: np.ndarray, n_bins: int) -> _Binned:
    values = np.asarray(feature.values)
    if feature.kind == "number":
        v = values.astype(np.float64)
        known = v[train][np.isfinite(v[train])]
        if len(known):
            qs = np.quantile(known, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
            edges = np.unique(qs)
            edges = edges[edges < known.max()]
        else:
            edges = np.zeros(0)
        codes = np.searchsorted(edges, v, side="left")
        codes[~np.isfinite(v)] = len(edges) + 1
        return _binned(feature, codes, len(edges) + 2, edges)
    if feature.kind != "category":
        raise ValueError(f"feature {feature.name!r}: unknown kind {feature.kind!r}")
    n_labels = len(feature.labels)
    codes = np.where(values < 0, n_labels, values)
    return _binned(feature, codes, n_labels + 1, np.zeros(0))


def _binned(feature: Feature, codes: np.ndarray, n_codes: int, edges: np.ndarray) -> _Binned:
    codes = codes.astype(np.int64)
    present = np.bincount(codes, minlength=n_codes)[:n_codes] > 0
    return _Binned(feature, codes, n_codes, edges, present)


@dataclass
class Node:
    """A node of the tree; ``rows`` of the training half are used while growing only."""

    id: int
    depth: int
    conditions: list[str]
    allowed: dict[int, np.ndarray]  # feature index -> allowed codes on the path
    parent: int | None = None
    split_feature: str | None = None
    split_stat: float = 0.0
    children: tuple[int, int] | None = None
    branch: str = ""  # the condition added by the parent's split
    train_n: tuple[int, int] = (0, 0)  # (test, control) customers in the training half
    n_test: int = 0  # estimation half
    n_control: int = 0
    mean_test: float = float("nan")
    mean_control: float = float("nan")
    effect: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    p_value: float = float("nan")
    q_value: float = float("nan")
    label: str = ""
    recommendation: str = ""
    _split: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    @property
    def is_leaf(self) -> bool:
        return self.children is None

    @property
    def description(self) -> str:
        return " and ".join(self.conditions) if self.conditions else "everyone"


@dataclass
class UpliftTree:
    """The grown tree, its honest estimates and the overall effect on the estimation half."""

    nodes: list[Node]
    overall: Diff
    criterion: str
    seed: int
    min_leaf: int
    n_train: int
    n_estimate: int
    binned: list[_Binned] = field(default_factory=list, repr=False)

    @property
    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if n.is_leaf]

    def rule(self, node: Node, fields: dict[str, tuple[str, str]]) -> str:
        """The group of ``node`` as a target rule; ``fields`` maps each feature name to its rule
        field and type (a feature missing from it cannot be written as a rule: KeyError)."""
        parts = []
        for j, allowed in node.allowed.items():
            if allowed[self.binned[j].present].all():
                continue
            field_name, kind = fields[self.binned[j].feature.name]
            parts.append(self.binned[j].rule(allowed, field_name, kind))
        return " and ".join(parts) or "true"


def _arm_sums(
    codes: np.ndarray, y: np.ndarray, treated: np.ndarray, n_codes: int
) -> tuple[np.ndarray, ...]:
    """Per code and arm: counts, sums and sums of squares, each ``(n_codes,)``."""
    out = []
    for arm in (treated, ~treated):
        c = codes[arm]
        v = y[arm]
        out += [
            np.bincount(c, minlength=n_codes).astype(np.float64),
            np.bincount(c, weights=v, minlength=n_codes),
            np.bincount(c, weights=v * v, minlength=n_codes),
        ]
    return tuple(out)


def _mean_var(n: np.ndarray, s: np.ndarray, ss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        var = np.maximum(ss - s * mean, 0.0) / (n - 1)
    return mean, var


def _candidates(
    binned: _Binned,
    rows: np.ndarray,
    y: np.ndarray,
    treated: np.ndarray,
    ystar: np.ndarray,
    criterion: str,
    min_leaf: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the splits of one feature at a node: ``(stats (c,), left masks (c, n_codes))``."""
    codes = binned.codes[rows]
    yc, tc = y[rows], treated[rows]
    nc = binned.n_codes
    n1, s1, ss1, n0, s0, ss0 = _arm_sums(codes, yc, tc, nc)
    if binned.feature.kind == "category":
        m1, _ = _mean_var(n1, s1, ss1)
        m0, _ = _mean_var(n0, s0, ss0)
        effect = m1 - m0
        present = (n1 + n0) > 0
        fallback = np.nanmean(effect) if np.isfinite(effect).any() else 0.0
        effect = np.where(np.isfinite(effect), effect, fallback)
        order = np.argsort(np.where(present, effect, np.inf), kind="stable")
        order = order[present[order]]
    else:
        order = np.flatnonzero((n1 + n0) > 0)
    if len(order) < 2:
        return np.zeros(0), np.zeros((0, nc), dtype=bool)
    cum = [np.cumsum(a[order])[:-1] for a in (n1, s1, ss1, n0, s0, ss0)]
    tot = [a[order].sum() for a in (n1, s1, ss1, n0, s0, ss0)]
    left = cum
    right = [t - c for t, c in zip(tot, cum, strict=True)]
    ok = (
        (left[0] >= min_leaf)
        & (left[3] >= min_leaf)
        & (right[0] >= min_leaf)
        & (right[3] >= min_leaf)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        if criterion == "interaction":
            m1l, v1l = _mean_var(left[0], left[1], left[2])
            m0l, v0l = _mean_var(left[3], left[4], left[5])
            m1r, v1r = _mean_var(right[0], right[1], right[2])
            m0r, v0r = _mean_var(right[3], right[4], right[5])
            diff = (m1l - m0l) - (m1r - m0r)
            var = v1l / left[0] + v0l / left[3] + v1r / right[0] + v0r / right[3]
        else:
            ys = ystar[rows]
            ns = np.bincount(codes, minlength=nc).astype(np.float64)[order]
            ss_ = np.bincount(codes, weights=ys, minlength=nc)[order]
            sss = np.bincount(codes, weights=ys * ys, minlength=nc)[order]
            nl, sl, ssl = np.cumsum(ns)[:-1], np.cumsum(ss_)[:-1], np.cumsum(sss)[:-1]
            nr, sr, ssr = ns.sum() - nl, ss_.sum() - sl, sss.sum() - ssl
            ml, vl = _mean_var(nl, sl, ssl)
            mr, vr = _mean_var(nr, sr, ssr)
            diff = ml - mr
            var = vl / nl + vr / nr
        score = np.where(ok & (var > 0), diff * diff / var, -1.0)
    masks = np.zeros((len(order) - 1, nc), dtype=bool)
    for k in range(len(order) - 1):
        masks[k, order[: k + 1]] = True
    keep = score >= 0
    return score[keep], masks[keep]


def grow_uplift_tree(
    features: list[Feature],
    y: np.ndarray,
    treated: np.ndarray,
    *,
    seed: int = 0,
    min_leaf: int = 100,
    max_depth: int = 3,
    criterion: str = "interaction",
    split_alpha: float = 0.05,
    n_bins: int = 16,
    alpha: float = 0.05,
) -> UpliftTree:
    """Grow an honest uplift tree for ``n`` customers (see the module docstring).

    ``y (n,)`` is each customer's value, ``treated (n,)`` bool the test group; ``min_leaf`` the
    fewest customers of each arm a training-half leaf may have.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r} (choose one of {', '.join(CRITERIA)})")
    y = np.asarray(y, dtype=np.float64)
    treated = np.asarray(treated, dtype=bool)
    n = len(y)
    rng = np.random.default_rng(seed)
    in_train = np.zeros(n, dtype=bool)
    in_train[rng.permutation(n)[: n // 2]] = True
    binned = [_bin(f, in_train, n_bins) for f in features]
    p = treated[in_train].mean() if in_train.any() else 0.5
    p = min(max(p, 1e-9), 1 - 1e-9)
    ystar = y * (treated.astype(np.float64) - p) / (p * (1.0 - p))

    root = Node(id=0, depth=0, conditions=[], allowed={})
    nodes = [root]
    rows_of = {0: np.flatnonzero(in_train)}
    queue = [0]
    while queue:
        node = nodes[queue.pop(0)]
        rows = rows_of.pop(node.id)
        node.train_n = (int(treated[rows].sum()), int((~treated[rows]).sum()))
        if node.depth >= max_depth:
            continue
        best: tuple[float, int, np.ndarray] | None = None
        tried = 0
        for j, b in enumerate(binned):
            scores, masks = _candidates(b, rows, y, treated, ystar, criterion, min_leaf)
            tried += len(scores)
            if len(scores) and (best is None or scores.max() > best[0]):
                k = int(np.argmax(scores))
                best = (float(scores[k]), j, masks[k])
        if best is None or tried == 0:
            continue
        threshold = stats.chi2.isf(split_alpha / tried, df=1)
        if best[0] < threshold:
            continue
        score, j, mask = best
        node.split_feature = features[j].name
        node.split_stat = score
        node._split = (j, mask)
        go_left = mask[binned[j].codes[rows]]
        kids = []
        for side, side_mask in ((go_left, mask), (~go_left, ~mask)):
            allowed = dict(node.allowed)
            prev = allowed.get(j, np.ones(binned[j].n_codes, dtype=bool))
            allowed[j] = prev & side_mask
            branch = binned[j].describe(allowed[j])
            conditions = [
                binned[i].describe(a) for i, a in allowed.items() if not a.all() or i == j
            ]
            child = Node(
                id=len(nodes),
                depth=node.depth + 1,
                conditions=conditions,
                allowed=allowed,
                parent=node.id,
                branch=branch,
            )
            nodes.append(child)
            rows_of[child.id] = rows[side]
            queue.append(child.id)
            kids.append(child.id)
        node.children = (kids[0], kids[1])

    est = np.flatnonzero(~in_train)
    leaf_of = _route(nodes, binned, est)
    overall = welch_diff(*_arm_moments(y[est], treated[est]), alpha=alpha)
    _estimate(nodes, leaf_of, est, y, treated, alpha)
    _label(nodes, float(overall.estimate[0]))
    return UpliftTree(
        nodes=nodes,
        overall=overall,
        criterion=criterion,
        seed=seed,
        min_leaf=min_leaf,
        n_train=int(in_train.sum()),
        n_estimate=len(est),
        binned=binned,
    )


def _route(nodes: list[Node], binned: list[_Binned], rows: np.ndarray) -> np.ndarray:
    """The node each row ends in (its leaf), ``(len(rows),)``."""
    at = np.zeros(len(rows), dtype=np.int64)
    for node in nodes:  # parents come before their children
        if node.children is None or node._split is None:
            continue
        j, mask = node._split
        here = at == node.id
        left = mask[binned[j].codes[rows[here]]]
        at[here] = np.where(left, node.children[0], node.children[1])
    return at


def _arm_moments(y: np.ndarray, treated: np.ndarray) -> tuple[float, ...]:
    y1, y0 = y[treated], y[~treated]
    var1 = float(y1.var(ddof=1)) if len(y1) > 1 else float("nan")
    var0 = float(y0.var(ddof=1)) if len(y0) > 1 else float("nan")
    mean1 = float(y1.mean()) if len(y1) else float("nan")
    mean0 = float(y0.mean()) if len(y0) else float("nan")
    return len(y1), mean1, var1, len(y0), mean0, var0


def _estimate(
    nodes: list[Node],
    leaf_of: np.ndarray,
    est: np.ndarray,
    y: np.ndarray,
    treated: np.ndarray,
    alpha: float,
) -> None:
    """Honest estimates for every node: a node holds the estimation rows of its leaves."""
    members: dict[int, np.ndarray] = {}
    for node in reversed(nodes):
        if node.children is None:
            members[node.id] = np.flatnonzero(leaf_of == node.id)
        else:
            members[node.id] = np.concatenate([members[c] for c in node.children])
    for node in nodes:
        rows = est[members[node.id]]
        n1, m1, v1, n0, m0, v0 = _arm_moments(y[rows], treated[rows])
        d = welch_diff(n1, m1, v1, n0, m0, v0, alpha=alpha)
        node.n_test, node.n_control = int(n1), int(n0)
        node.mean_test, node.mean_control = m1, m0
        node.effect = float(d.estimate[0])
        node.low, node.high, node.p_value = float(d.low[0]), float(d.high[0]), float(d.p_value[0])
    leaves = [n for n in nodes if n.is_leaf]
    q = benjamini_hochberg([n.p_value for n in leaves])
    for node, qv in zip(leaves, q, strict=True):
        node.q_value = float(qv)


def label_effect(effect: float, low: float, high: float, overall: float, small: bool) -> str:
    """The label of a group from its honest effect, interval and the campaign's overall effect.

    >>> label_effect(5.0, 2.0, 8.0, 3.0, False), label_effect(1.0, 0.2, 1.8, 3.0, False)
    ('highly effective', 'somewhat effective')
    >>> label_effect(1.0, -0.5, 2.5, 3.0, False), label_effect(-2.0, -3.0, -1.0, 3.0, False)
    ('not effective', 'harmful')
    """
    if small or not np.isfinite(low) or not np.isfinite(high):
        return TOO_SMALL
    if high < 0:
        return HARMFUL
    if low <= 0:
        return NOT_EFFECTIVE
    if effect >= max(overall, 0.0):
        return HIGHLY
    return SOMEWHAT


def recommend(label: str, effect: float, low: float, high: float) -> str:
    """A plain-language recommendation for a group with this label."""
    gain = f"{effect:+,.2f} per decision (95% CI {low:+,.2f} to {high:+,.2f})"
    return {
        HIGHLY: f"keep sending to this group: it gains {gain}",
        SOMEWHAT: f"keep sending, but try a stronger treatment for this group: {gain}",
        NOT_EFFECTIVE: (
            f"no measurable gain ({gain}): redesign the offer for this group or stop sending"
        ),
        HARMFUL: (
            f"stop sending to this group and redesign: it loses {-effect:,.2f} per decision "
            f"(95% CI {-high:,.2f} to {-low:,.2f})"
        ),
        TOO_SMALL: "too few customers to say: keep measuring before acting",
    }[label]


def _label(nodes: list[Node], overall: float) -> None:
    for node in nodes:
        small = min(node.n_test, node.n_control) < MIN_PER_ARM
        node.label = label_effect(node.effect, node.low, node.high, overall, small)
        node.recommendation = recommend(node.label, node.effect, node.low, node.high)
