"""Contact-fatigue context features: what every policy sees of a customer's recent contacts."""

from __future__ import annotations

import numpy as np

from orchestrator.engine.history import (
    CONTACT_LOOKBACK,
    contact_feature_names,
    contact_features,
    history_from_columns,
)


def test_contacts_are_counted_by_window_and_channel_and_only_when_sent() -> None:
    ids = ["a", "b", "c"]
    history = history_from_columns(
        ["a", "a", "a", "b", "b"],
        np.array([1, 6, 20, 3, 2]),  # days before the run date
        ["x", "y", "x", "x", None],
        ["email", "sms", "email", "email", None],
        np.array([True, True, True, False, False]),  # b: a control and a send-nothing
        np.zeros(5, dtype=np.int64),
        ids,
        campaign_vocab=["x", "y"],
        channel_vocab=["email", "sms"],
        measured={"x": True, "y": True},
    )
    names = contact_feature_names(["sms", "email"])
    got = dict(zip(names, contact_features(history, 3, names).T, strict=True))
    assert got["contacts.7d"].tolist() == [2, 0, 0]
    assert got["contacts.30d"].tolist() == [3, 0, 0]
    assert got["contacts.days_since"].tolist() == [1, CONTACT_LOOKBACK, CONTACT_LOOKBACK]
    assert got["contacts.7d.email"].tolist() == [1, 0, 0]
    assert got["contacts.7d.sms"].tolist() == [1, 0, 0]
