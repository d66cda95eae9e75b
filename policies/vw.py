"""Vowpal Wabbit contextual bandit (``--cb_explore_adf``): the production learner.

Each customer is one multi-line VW example: a ``shared |c`` line with the customer's context
and one ``|a`` line per *eligible* action with its (hashed campaign, channel, treatment)
features; ``-q ca`` crosses the two namespaces. VW's explorer (``epsilon``, ``squarecb``,
``cover``, ``bag``, ``regcbopt``) turns its cost estimates into a PMF over those actions;
``action_dist`` is that PMF placed on the eligible columns, and the engine samples from it with
its own seeded generator. Learning feeds ``cost = -reward / reward_scale`` with the logged
propensity.

Building examples is the Python-side cost, so none of it happens per customer in Python: action
lines are formatted once per batch and joined once per distinct eligibility pattern; Arrow
formats the context columns and assembles every customer's text in bulk (vectorized, a few
microseconds per customer against VW's tens). The text goes through VW's native parser and
``predict_multi`` directly (``pylibvw``), skipping the Python ``Example`` wrappers that
``Workspace.predict`` builds per line (a 3-4× difference at 50 actions). ``update`` sends only
the chosen action's line when the cost estimator is ``mtr`` (VW's default for
``cb_explore_adf``), which learns from that line alone.

Context columns are VW features named after ``set_feature_names`` (the engine's
``context_names``; ``x0, x1, …`` until then). VW hashes names, so a model keeps its meaning when
columns are added or reordered. The state is the VW model file (``--save_resume`` content) in the
versioned envelope; it is loaded with the options it was trained with.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pylibvw
from vowpalwabbit import Workspace

from policies.base import Policy, check_batch, check_log

EXPLORERS = ("epsilon", "squarecb", "cover", "bag", "regcbopt")
_LEARN_ACTIONS = ("auto", "chosen", "all")
# Parameters fixed in a VW model file: a stored model must have been built with the same.
_MODEL_PARAMS = ("explorer", "cb_type", "bits", "learning_rate")
_EXPLORER_PARAMS = {
    "epsilon": ("epsilon",),
    "squarecb": ("gamma_scale",),
    "cover": ("cover",),
    "bag": ("bag", "epsilon"),
    "regcbopt": ("mellowness",),
}
_UNSAFE = re.compile(r"[\s:|]")
_CHUNK = 4096  # rows whose example texts exist at once


class VowpalPolicy(Policy):
    """VW ``--cb_explore_adf`` with customer (``c``) × action (``a``) interactions.

    ``explorer`` one of ``EXPLORERS``; ``epsilon`` for ``epsilon`` and ``bag``; ``gamma_scale``
    for ``squarecb``; ``cover`` and ``bag`` the number of policies; ``mellowness`` for
    ``regcbopt``; ``cb_type`` VW's cost estimator (``mtr``, ``dr``, ``ips``); ``learning_rate``
    VW's ``-l`` (None: VW's default); ``bits`` hash table size (``-b``); ``reward_scale``
    divides rewards into costs of order 1 (VW's explorers assume that scale); ``learn_actions``
    ``"chosen"`` (learn from the chosen action line only), ``"all"`` (every action line) or
    ``"auto"`` (chosen for ``mtr``, except with ``cover``, which needs them all);
    ``propensity_weights`` weighs each logged row by one over its propensity in VW's cost
    regression (MTR's own rule; off, the default: every row weighs one, see ``update``);
    ``seed`` VW's random seed; ``extra_args`` further VW command-line arguments.
    """

    name = "vw"
    state_version = 1

    def __init__(
        self,
        *,
        explorer: str = "squarecb",
        epsilon: float = 0.05,
        gamma_scale: float = 10.0,
        cover: int = 3,
        bag: int = 5,
        mellowness: float = 0.1,
        cb_type: str = "mtr",
        learning_rate: float | None = None,
        bits: int = 18,
        reward_scale: float = 1.0,
        learn_actions: str = "auto",
        propensity_weights: bool = False,
        seed: int = 0,
        extra_args: Sequence[str] = (),
    ) -> None:
        if explorer not in EXPLORERS:
            raise ValueError(f"vw: unknown explorer {explorer!r}; choose one of {EXPLORERS}")
        if learn_actions not in _LEARN_ACTIONS:
            raise ValueError(f"vw: learn_actions must be one of {_LEARN_ACTIONS}")
        if reward_scale <= 0:
            raise ValueError(f"vw: reward_scale must be > 0, got {reward_scale}")
        self.explorer = explorer
        self.epsilon = float(epsilon)
        self.gamma_scale = float(gamma_scale)
        self.cover = int(cover)
        self.bag = int(bag)
        self.mellowness = float(mellowness)
        self.cb_type = cb_type
        self.learning_rate = None if learning_rate is None else float(learning_rate)
        self.bits = int(bits)
        self.reward_scale = float(reward_scale)
        self.learn_actions = learn_actions
        self.propensity_weights = bool(propensity_weights)
        self.seed = int(seed)
        self.extra_args = tuple(str(a) for a in extra_args)
        self._names: tuple[str, ...] | None = None
        self._vw = Workspace(arg_list=self._arguments())
        self._saved: bytes | None = None  # model bytes while nothing was learned since

    def params(self) -> dict[str, Any]:
        return {
            "explorer": self.explorer,
            "epsilon": self.epsilon,
            "gamma_scale": self.gamma_scale,
            "cover": self.cover,
            "bag": self.bag,
            "mellowness": self.mellowness,
            "cb_type": self.cb_type,
            "learning_rate": self.learning_rate,
            "bits": self.bits,
            "reward_scale": self.reward_scale,
            "learn_actions": self.learn_actions,
            "propensity_weights": self.propensity_weights,
            "seed": self.seed,
            "extra_args": list(self.extra_args),
        }

    @classmethod
    def params_from_rewards(cls, rewards: np.ndarray) -> dict[str, Any]:
        """Money in, costs of order one out (what VW's explorers assume): ``reward_scale`` is
        the standard deviation of the first rewards."""
        return {"reward_scale": float(max(np.std(rewards), 1e-6))} if len(rewards) else {}

    def _arguments(self) -> list[str]:
        args = ["--cb_explore_adf", "--quiet", "--save_resume", "-q", "ca"]
        args += ["-b", str(self.bits), "--random_seed", str(self.seed), "--cb_type", self.cb_type]
        if self.learning_rate is not None:
            args += ["-l", repr(self.learning_rate)]
        args += {
            "epsilon": ["--epsilon", repr(self.epsilon)],
            "squarecb": ["--squarecb", "--gamma_scale", repr(self.gamma_scale)],
            "cover": ["--cover", str(self.cover)],
            "bag": ["--bag", str(self.bag), "--epsilon", repr(self.epsilon)],
            "regcbopt": ["--regcbopt", "--mellowness", repr(self.mellowness)],
        }[self.explorer]
        return args + list(self.extra_args)

    def set_feature_names(self, names: Sequence[str]) -> None:
        """Name the context columns (VW hashes the names, so the order does not matter)."""
        self._names = tuple(names)

    # --- example text ------------------------------------------------------------------------

    def _column_names(self, d: int) -> list[str]:
        if self._names is not None and len(self._names) == d:
            return [_UNSAFE.sub("_", name) for name in self._names]
        return [f"x{j}" for j in range(d)]

    def _shared_lines(self, contexts: np.ndarray) -> pa.Array:
        """``shared |c name:value ...`` for each row, formatted in bulk by Arrow (the shortest
        text that reads back as the same number)."""
        n, d = contexts.shape
        if d == 0:
            return pa.array(["shared |c"] * n)
        pieces: list[Any] = []
        for j, (name, column) in enumerate(
            zip(self._column_names(d), np.ascontiguousarray(contexts.T), strict=True)
        ):
            pieces.append(f"{'shared |c ' if j == 0 else ' '}{name}:")
            pieces.append(pc.cast(pa.array(column), pa.string()))
        return pc.binary_join_element_wise(*pieces, "")

    @staticmethod
    def _action_lines(action_features: np.ndarray) -> pa.Array:
        lines = []
        for row in np.asarray(action_features, dtype=np.float64).tolist():
            lines.append("|a " + " ".join(f"h{j}:{v!r}" for j, v in enumerate(row) if v != 0.0))
        return pa.array(lines, pa.string())

    def _prediction_texts(
        self, contexts: np.ndarray, action_features: np.ndarray, eligible: np.ndarray
    ) -> Iterator[str]:
        """One multi-line example per row with an eligible action, in row order."""
        rows = np.flatnonzero(eligible.any(axis=1))
        lines = self._action_lines(action_features)
        # Each distinct eligibility pattern's block of action lines is joined once.
        packed = np.ascontiguousarray(np.packbits(eligible[rows], axis=1))
        keys = packed.view(np.dtype((np.void, max(packed.shape[1], 1)))).ravel()
        _, first, pattern = np.unique(keys, return_index=True, return_inverse=True)
        patterns = eligible[rows[first]]
        offsets = np.concatenate([[0], np.cumsum(patterns.sum(axis=1))]).astype(np.int32)
        blocks = pc.binary_join(
            pa.ListArray.from_arrays(pa.array(offsets), lines.take(np.nonzero(patterns)[1])),
            "\n",
        )
        pattern = pattern.ravel()
        for start in range(0, len(rows), _CHUNK):
            part = slice(start, start + _CHUNK)
            texts = pc.binary_join_element_wise(
                self._shared_lines(contexts[rows[part]]), blocks.take(pattern[part]), "\n"
            )
            yield from texts.to_pylist()

    def _learning_texts(
        self,
        contexts: np.ndarray,
        action_features: np.ndarray,
        actions: np.ndarray,
        costs: np.ndarray,
        probs: np.ndarray,
        learn_all: bool,
    ) -> Iterator[str]:
        """One labelled example per logged row: ``0:cost:probability`` on the chosen line."""
        lines = self._action_lines(action_features)
        n_actions = len(lines)
        for start in range(0, len(actions), _CHUNK):
            part = slice(start, start + _CHUNK)
            m = len(actions[part])
            label = pc.binary_join_element_wise(
                "0",
                pc.cast(pa.array(costs[part]), pa.string()),
                pc.cast(pa.array(probs[part]), pa.string()),
                ":",
            )
            chosen = pc.binary_join_element_wise(label, lines.take(actions[part]), " ")
            if learn_all:
                index = np.tile(np.arange(n_actions), (m, 1))
                index[np.arange(m), actions[part]] = n_actions + np.arange(m)
                values = pa.concat_arrays([lines, chosen]).take(index.ravel())
                ends = np.arange(0, m * n_actions + 1, n_actions, dtype=np.int32)
                chosen = pc.binary_join(pa.ListArray.from_arrays(pa.array(ends), values), "\n")
            texts = pc.binary_join_element_wise(self._shared_lines(contexts[part]), chosen, "\n")
            yield from texts.to_pylist()

    # --- scoring -----------------------------------------------------------------------------

    def action_dist(
        self, contexts: np.ndarray, action_features: np.ndarray, eligible: np.ndarray
    ) -> np.ndarray:
        contexts = np.asarray(contexts)
        action_features = np.asarray(action_features, dtype=np.float64)
        eligible = np.asarray(eligible, dtype=bool)
        check_batch("vw", contexts, action_features, eligible)
        if not np.isfinite(contexts).all():
            raise ValueError("vw: contexts must be finite")
        dist = np.zeros(eligible.shape)
        vw, parse = self._vw, pylibvw.vw._parse
        predict, finish = pylibvw.vw.predict_multi, pylibvw.vw._finish_example_multi_ex
        pmf: list[float] = []
        for text in self._prediction_texts(contexts, action_features, eligible):
            examples = parse(vw, text)
            predict(vw, examples)
            pmf.extend(examples[0].get_action_scores())
            finish(vw, examples)
        # The PMF lists the eligible actions in column order, row after row: exactly the
        # order in which a boolean mask assigns.
        dist[eligible] = pmf
        np.maximum(dist, 0.0, out=dist)
        totals = dist.sum(axis=1, keepdims=True)
        np.divide(dist, totals, out=dist, where=totals > 0)
        return dist

    # --- learning ----------------------------------------------------------------------------

    def update(
        self,
        contexts: np.ndarray,
        action_features: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        propensities: np.ndarray,
    ) -> None:
        """Learn from each logged row in order (VW is an online learner).

        Without ``propensity_weights`` the label's probability is 1: VW's regression of cost
        on context and action then weighs every row alike, as ``lints``' least squares does,
        which is consistent under any logging that depends on the context only when the
        model is right. MTR's 1/propensity weights correct for a wrong model at the price of
        variance, and with money rewards that price was the model: rows logged at a
        propensity of 1% weigh a hundred others, a few large purchases decided which action
        looked best, and the policy sent a 30% discount to half the customers of a weekly
        wave (standard world: -30% of the oracle with the weights, +9% without; world seed
        2027: -51% and -22%)."""
        _, feats, actions, rewards = check_log(
            "vw", contexts, action_features, actions, rewards, propensities
        )
        learn_all = self.learn_actions == "all" or (
            self.learn_actions == "auto" and (self.cb_type != "mtr" or self.explorer == "cover")
        )
        texts = self._learning_texts(
            np.asarray(contexts),  # formatted as given: the same digits as when choosing
            feats,
            actions,
            -rewards / self.reward_scale,
            np.asarray(propensities, dtype=np.float64)
            if self.propensity_weights
            else np.ones(len(actions)),
            learn_all,
        )
        vw, parse = self._vw, pylibvw.vw._parse
        learn, finish = pylibvw.vw.learn_multi, pylibvw.vw._finish_example_multi_ex
        for text in texts:
            examples = parse(vw, text)
            learn(vw, examples)
            finish(vw, examples)
        self._saved = None

    # --- state -------------------------------------------------------------------------------

    def _state_payload(self) -> bytes:
        if self._saved is None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.vw")
                self._vw.save(path)
                with open(path, "rb") as f:
                    self._saved = f.read()
        meta = {
            "names": list(self._names) if self._names is not None else None,
            "model": self._model_params(),
        }
        head = json.dumps(meta).encode()
        return len(head).to_bytes(4, "big") + head + self._saved

    def _model_params(self) -> dict[str, Any]:
        params = self.params()
        keys = _MODEL_PARAMS + _EXPLORER_PARAMS[self.explorer]
        return {key: params[key] for key in keys}

    def _load_payload(self, payload: bytes) -> None:
        size = int.from_bytes(payload[:4], "big")
        meta = json.loads(payload[4 : 4 + size])
        model = payload[4 + size :]
        stored, mine = meta["model"], self._model_params()
        if stored != mine:
            changed = ", ".join(
                f"{k}={stored[k]!r}" for k in stored if k not in mine or mine[k] != stored[k]
            )
            raise ValueError(
                f"vw: the stored model was built with {changed}; VW cannot change its explorer "
                "or cost estimator after training: start a new policy version"
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.vw")
            with open(path, "wb") as f:
                f.write(model)
            # The model file carries the options it was trained with; only add run-time ones.
            workspace = Workspace(arg_list=["--quiet", "--save_resume", "-i", path])
        self._vw.finish()
        self._vw = workspace
        if self._names is None and meta["names"] is not None:
            self._names = tuple(meta["names"])
        self._saved = model

    def __del__(self) -> None:
        vw = getattr(self, "_vw", None)
        if vw is not None:
            vw.finish()
