"""Micro-segments: behaviour clusters inside each lifecycle stage, stable from refresh to refresh.

Inside a stage, customers are grouped by how they buy: recency, frequency, spend, order value,
tenure, discount affinity, and their category and channel mix (:func:`behaviour_features`). Each
stage is clustered on its own, on its own standardized features, with k-means (scikit-learn's
``MiniBatchKMeans``: one pass over a million rows takes seconds).

- **How many clusters.** Per stage, every k in ``[min_clusters, max_clusters]`` is fitted and the
  one with the best silhouette (on a sample) wins; the last refresh's k is kept unless another
  beats it by more than ``keep_margin``, so the count does not flicker between close scores.
- **Stable labels.** A label is ``"<stage>.<id>"`` (``active.2``). With the last refresh's
  centroids (stored with the model, in raw units), the fit starts from them when the count is the
  same, and new clusters are matched to old ones by the Hungarian method on centroid distance:
  a matched cluster keeps its id, a new one gets the next free id. So ``segment_history`` records
  customers who moved, not a renumbering.
- **Names** say what sets a cluster apart within its stage: the features whose centroid is
  furthest from the stage's mean, in standard deviations ("active · high value · full price").

Pure: arrays in, arrays and plain data out; the refresh reads and writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.segments.config import MicroConfig

SILHOUETTE_SAMPLE = 2_000  # customers per stage the silhouette of each k is measured on
NAME_WORDS = 2  # distinguishing features in a name
NAME_MIN_Z = 0.5  # a feature names a cluster only this many sds from the stage's mean
MIN_PER_CLUSTER = 10  # a stage needs this many customers per cluster to be split
BASE_FEATURES = (
    "recency",
    "frequency",
    "monetary",
    "order_value",
    "tenure",
    "discount_affinity",
)
# What a feature far above (+) or below (-) its stage's mean says about a cluster.
WORDS: dict[str, tuple[str, str]] = {
    "recency": ("lapsing", "recent"),
    "frequency": ("frequent", "few orders"),
    "monetary": ("high value", "low value"),
    "order_value": ("large orders", "small orders"),
    "tenure": ("long-standing", "newer"),
    "discount_affinity": ("deal seeker", "full price"),
}


@dataclass(frozen=True)
class Behaviour:
    """``matrix (n, f)`` of behaviour features (raw units, logs for counts and money) and names."""

    matrix: np.ndarray
    names: tuple[str, ...]


def mix(
    owner: np.ndarray, codes: np.ndarray, names: Sequence[str], n: int, top: int
) -> tuple[np.ndarray, list[str]]:
    """Each customer's share of purchases in each of the ``top`` most bought values; (n, ≤top).

    ``owner (m,)`` customer index and ``codes (m,)`` value code (-1: unknown, not counted) of
    each purchase. Customers without a known value get zeros.

    >>> share, kept = mix(np.array([0, 0, 1, 1]), np.array([0, 1, 1, -1]), ["a", "b"], 3, 5)
    >>> share.tolist(), kept  # the most bought first
    ([[0.5, 0.5], [1.0, 0.0], [0.0, 0.0]], ['b', 'a'])
    """
    known = codes >= 0
    counts = np.bincount(codes[known], minlength=len(names))
    keep = [int(c) for c in np.argsort(-counts, kind="stable")[:top] if counts[c] > 0]
    if not keep:
        return np.zeros((n, 0)), []
    column = np.full(len(names), -1, dtype=np.int64)
    column[keep] = np.arange(len(keep))
    col = column[np.where(known, codes, 0)]
    use = known & (col >= 0)
    table = np.zeros((n, len(keep)))
    np.add.at(table, (owner[use], col[use]), 1.0)
    totals = np.bincount(owner[known], minlength=n).astype(np.float64)
    share = np.divide(table, totals[:, None], out=np.zeros_like(table), where=totals[:, None] > 0)
    return share, [str(names[c]) for c in keep]


def behaviour_features(
    recency: np.ndarray,
    repeats: np.ndarray,
    net_spend: np.ndarray,
    tenure: np.ndarray,
    affinity: np.ndarray,
    categories: tuple[np.ndarray, Sequence[str]],
    channels: tuple[np.ndarray, Sequence[str]],
) -> Behaviour:
    """The clustering features of every customer (NaN where unknown: prospects, no discounts).

    Counts and money enter as ``log1p`` (a customer with 40 orders is not twenty times one with
    two); order value is net spend over purchase days.
    """
    repeats = np.maximum(repeats, 0.0)  # -1 for customers who never bought
    days = repeats + 1.0
    spend = np.maximum(net_spend, 0.0)
    columns = [
        np.log1p(recency),
        np.log1p(repeats),
        np.log1p(spend),
        np.log1p(spend / days),
        np.log1p(tenure),
        affinity,
    ]
    names = list(BASE_FEATURES)
    for prefix, (share, values) in (("category", categories), ("channel", channels)):
        for j, value in enumerate(values):
            columns.append(share[:, j])
            names.append(f"{prefix}={value}")
    return Behaviour(np.column_stack(columns).astype(np.float64), tuple(names))


@dataclass(frozen=True)
class Cluster:
    """One micro-segment: its stable label, name, size and centroid (raw feature units)."""

    label: str
    name: str
    size: int
    centroid: dict[str, float]


@dataclass(frozen=True)
class StageFit:
    stage: str
    k: int
    silhouette: float | None  # of the chosen k; None when the stage was not split
    scores: dict[int, float]  # silhouette of every k tried
    clusters: tuple[Cluster, ...]


@dataclass(frozen=True)
class MicroSegments:
    """``codes (n,)`` index into ``labels`` (-1: no micro-segment: prospects, no stage)."""

    codes: np.ndarray
    labels: tuple[str, ...]
    stages: tuple[StageFit, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "stages": {
                s.stage: {
                    "k": s.k,
                    "silhouette": s.silhouette,
                    "silhouette_by_k": {str(k): v for k, v in s.scores.items()},
                    "clusters": [
                        {"label": c.label, "name": c.name, "size": c.size, "centroid": c.centroid}
                        for c in s.clusters
                    ],
                }
                for s in self.stages
            }
        }


def fit_micro_segments(
    behaviour: Behaviour,
    stages: np.ndarray,
    stage_names: Sequence[str],
    config: MicroConfig,
    previous: Mapping[str, Any] | None = None,
) -> MicroSegments:
    """Cluster the customers of each stage (``stages (n,)`` codes into ``stage_names``, -1: none).

    ``previous`` is the last refresh's :meth:`MicroSegments.to_json`, whose centroids and counts
    keep labels stable. ``prospect`` customers (no purchase) get no micro-segment.
    """
    n = len(stages)
    codes = np.full(n, -1, dtype=np.int64)
    labels: list[str] = []
    fits: list[StageFit] = []
    before = (previous or {}).get("stages", {})
    for s, stage in enumerate(stage_names):
        rows = np.flatnonzero(stages == s)
        if stage == "prospect" or not len(rows):
            continue
        fit, local = _fit_stage(stage, behaviour, rows, config, before.get(stage))
        codes[rows] = local + len(labels)
        labels.extend(c.label for c in fit.clusters)
        fits.append(fit)
    return MicroSegments(codes, tuple(labels), tuple(fits))


def _fit_stage(
    stage: str,
    behaviour: Behaviour,
    rows: np.ndarray,
    config: MicroConfig,
    previous: Mapping[str, Any] | None,
) -> tuple[StageFit, np.ndarray]:
    """The stage's clusters and each row's cluster index (into the returned clusters)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import pairwise_distances, silhouette_score

    raw = behaviour.matrix[rows]
    known = ~np.isnan(raw)
    # An unknown value (no discount seen) sits at the stage's mean of the known ones.
    fill = np.nansum(raw, axis=0) / np.maximum(known.sum(axis=0), 1)
    raw = np.where(known, raw, fill)
    mean, sd = raw.mean(axis=0), raw.std(axis=0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    z = (raw - mean) / sd
    rng = np.random.default_rng([config.seed, len(rows)])
    sample = z[rng.permutation(len(z))[: config.fit_sample]]  # random order: the probe below too
    old = _previous_centroids(previous, behaviour.names, mean, sd)
    most = min(config.max_clusters, len(rows) // MIN_PER_CLUSTER)
    ks = list(range(config.min_clusters, most + 1))
    scores: dict[int, float] = {}
    models: dict[int, Any] = {}
    if len(ks) >= 1 and most >= 2:
        probe = sample[: min(len(sample), SILHOUETTE_SAMPLE)]
        distances = pairwise_distances(probe)  # once for every k: most of the silhouette's cost
        for k in ks:
            if k < 2:
                continue
            init: Any = "k-means++"
            if old is not None and len(old[1]) == k:
                init = old[1]
            model = MiniBatchKMeans(
                n_clusters=k,
                init=init,
                n_init=1 if not isinstance(init, str) else 3,
                random_state=config.seed,
                batch_size=4096,
            ).fit(sample)
            found = model.predict(probe)
            if len(np.unique(found)) < 2:
                continue
            scores[k] = float(silhouette_score(distances, found, metric="precomputed"))
            models[k] = model
    if scores:
        k = max(scores, key=lambda key: (scores[key], -key))
        if old is not None and len(old[1]) in scores:
            kept = len(old[1])
            if scores[k] - scores[kept] <= config.keep_margin:
                k = kept
        # The chosen k is refined by full k-means (Lloyd) from the mini-batch centres, or from
        # the last refresh's when the count is the same: a fixed point of the same data stays
        # put, so a re-run gives the same labels.
        start = old[1] if old is not None and len(old[1]) == k else models[k].cluster_centers_
        final = KMeans(n_clusters=k, init=start, n_init=1, random_state=config.seed).fit(sample)
        centres = final.cluster_centers_
        local = final.predict(z)
    else:
        k, centres, local = 1, np.zeros((1, z.shape[1])), np.zeros(len(z), dtype=np.int64)
    ids = _match_ids(centres, old)
    order = np.argsort(ids, kind="stable")  # clusters listed by id
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    local = rank[local]
    sizes = np.bincount(local, minlength=len(order))
    names = _names(stage, centres[order], behaviour.names)
    clusters = tuple(
        Cluster(
            label=f"{stage}.{ids[j]}",
            name=names[i],
            size=int(sizes[i]),
            centroid=dict(zip(behaviour.names, map(float, centres[j] * sd + mean), strict=True)),
        )
        for i, j in enumerate(order)
    )
    chosen = scores.get(k) if scores else None
    return StageFit(stage, k, chosen, scores, clusters), local


def _previous_centroids(
    previous: Mapping[str, Any] | None,
    names: Sequence[str],
    mean: np.ndarray,
    sd: np.ndarray,
) -> tuple[list[int], np.ndarray] | None:
    """The last refresh's cluster ids and centroids of a stage, standardized as today's data."""
    if not previous or not previous.get("clusters"):
        return None
    ids: list[int] = []
    rows: list[list[float]] = []
    for c in previous["clusters"]:
        try:
            ids.append(int(str(c["label"]).rsplit(".", 1)[1]))
        except (KeyError, IndexError, ValueError):
            return None
        centroid = c.get("centroid", {})
        # A feature the last refresh did not have (a new category) sits at today's mean.
        rows.append([float(centroid.get(f, m)) for f, m in zip(names, mean, strict=True)])
    return ids, (np.array(rows) - mean) / sd


def _match_ids(centres: np.ndarray, old: tuple[list[int], np.ndarray] | None) -> np.ndarray:
    """A stable id per new centre: the id of the old centre it is matched to, else a new one."""
    ids = np.zeros(len(centres), dtype=np.int64)
    if old is None:
        return np.arange(1, len(centres) + 1)
    old_ids, old_centres = old
    distance = np.linalg.norm(centres[:, None, :] - old_centres[None, :, :], axis=2)
    from scipy.optimize import linear_sum_assignment  # lazy: scipy.optimize loads in ~0.4 s

    new_rows, old_rows = linear_sum_assignment(distance)
    taken = set()
    for i, j in zip(new_rows, old_rows, strict=True):
        ids[i] = old_ids[j]
        taken.add(old_ids[j])
    nxt = max(old_ids, default=0) + 1
    for i in range(len(centres)):
        if i not in set(new_rows.tolist()):
            ids[i] = nxt
            nxt += 1
    return ids


def _names(stage: str, centres: np.ndarray, features: Sequence[str]) -> list[str]:
    """What sets each cluster apart (centres in the stage's standard units; unique per stage)."""
    out: list[str] = []
    for centre in centres:
        words: list[str] = []
        for f in np.argsort(-np.abs(centre), kind="stable"):
            if len(words) == NAME_WORDS or abs(centre[f]) < NAME_MIN_Z:
                break
            word = _word(features[f], float(centre[f]))
            if word and word not in words:
                words.append(word)
        out.append(" · ".join([stage.replace("_", " "), *(words or ["typical"])]))
    seen: dict[str, int] = {}
    for i, name in enumerate(out):  # two clusters can share their distinguishing words
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            out[i] = f"{name} ({seen[name]})"
    return out


def _word(feature: str, z: float) -> str | None:
    if feature in WORDS:
        return WORDS[feature][0 if z > 0 else 1]
    prefix, _, value = feature.partition("=")
    if z <= 0:
        return None  # "buys little of X" distinguishes nobody
    return f"mostly {value}" if prefix == "category" else f"{value} buyer"
