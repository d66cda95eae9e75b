"""Customer segmentation: RFM, lifecycle stages, BG/NBD and Gamma-Gamma value, behaviour layers.

Pure cores (numpy in, numpy out, the as-of day passed in): :mod:`.rfm`, :mod:`.lifecycle`,
:mod:`.bgnbd`, :mod:`.gamma_gamma`, :mod:`.behaviour`, :mod:`.summary`, :mod:`.value`. The
use-cases: :func:`refresh_segments` writes ``customer_features`` and ``segment_history``;
:func:`transition_matrix` and :func:`segment_at` read the history back.
"""

from __future__ import annotations

from orchestrator.segments.config import SegmentConfig
from orchestrator.segments.history import SEGMENT_KINDS, segment_at, segments_on
from orchestrator.segments.model_store import load_model
from orchestrator.segments.refresh import RefreshResult, refresh_segments
from orchestrator.segments.transitions import TransitionMatrix, transition_matrix

__all__ = [
    "SEGMENT_KINDS",
    "RefreshResult",
    "SegmentConfig",
    "TransitionMatrix",
    "load_model",
    "refresh_segments",
    "segment_at",
    "segments_on",
    "transition_matrix",
]
