"""Training/serving skew: for a sample of a day's served rows, the point-in-time vector the training set
would have (the offline store through Feast, as of 1 µs before the transaction) against the vector
served; per feature view, the share of rows where any of its features differ."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.artifacts import ModelManifest
from core.monitoring import SkewReport, ViewSkew
from core.served_log import feature_column
from training.point_in_time import differing, point_in_time_vectors, vector_matrix

SKEW_TAG = "skew_max_ratio"
DEFAULT_MAX_RATIO = 0.01
SAMPLE_ROWS = 1000
_ROW = "served_row"


def max_ratio(view_tags: dict[str, str], view: str) -> float:
    """The share of differing rows a view tolerates (tag skew_max_ratio)."""
    try:
        return float(view_tags.get(SKEW_TAG, DEFAULT_MAX_RATIO))
    except ValueError as exc:
        raise ValueError(f"feature view {view}: tag {SKEW_TAG} must be a number: {exc}") from exc


def skew_of_day(store, manifest: ModelManifest, view_tags: dict[str, dict[str, str]], day: str, served: pd.DataFrame,
                sample_rows: int = SAMPLE_ROWS, seed: int = 0) -> SkewReport:
    """`served`: the day's served-feature log; the rows the model version `manifest` answered are sampled."""
    refs = list(manifest.feature_refs)
    rows = served[served["answered"] & (served["model_version"] == manifest.version)]
    if len(rows) > sample_rows:
        rows = rows.sample(n=sample_rows, random_state=seed)
    join_keys = list(dict.fromkeys(key for pin in manifest.feature_views.values() for key, _ in pin.join_keys))
    transactions = rows[[*join_keys, "event_timestamp"]].assign(**{_ROW: np.arange(len(rows))})
    expected = vector_matrix(point_in_time_vectors(store, manifest.feature_service, refs, transactions, _ROW).sort_index(), refs)
    served_values = rows[[feature_column(ref) for ref in refs]].to_numpy(np.float64, na_value=np.nan)
    differs = differing(served_values, expected)
    views = []
    for view in manifest.feature_views:
        columns = [i for i, ref in enumerate(refs) if ref.startswith(f"{view}:")]
        views.append(ViewSkew(view=view, compared=len(rows), differing=int(differs[:, columns].any(axis=1).sum()),
                              threshold=max_ratio(view_tags.get(view, {}), view)))
    examples = tuple({"txn_id": rows["txn_id"].iloc[row],
                      "differs": {refs[i]: [_plain(served_values[row, i]), _plain(expected[row, i])] for i in np.flatnonzero(differs[row])[:4]}}
                     for row in np.flatnonzero(differs.any(axis=1))[:3])
    return SkewReport(feature_service=manifest.feature_service, model_version=manifest.version, day=day,
                      served_rows=len(served), views=tuple(views), examples=examples)


def _plain(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
