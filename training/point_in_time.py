"""The point-in-time feature vector of a transaction, as the training set has it, and the comparison of a
served vector with it. Training, the replay and the skew monitor share these semantics: features as of
one microsecond before the transaction (the state just before it, what serving reads from Redis)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.served_log import feature_column

AS_OF_BEFORE = pd.Timedelta(microseconds=1)


def point_in_time_vectors(store, feature_service: str, refs: list[str], transactions: pd.DataFrame, key: str) -> pd.DataFrame:
    """`transactions` (join keys, `key`, event_timestamp = the transaction's instant, any extra columns)
    -> one column per ref (`view:feature`), indexed by `key`, through Feast's get_historical_features."""
    entities = transactions.copy()
    entities["event_timestamp"] = pd.to_datetime(entities["event_timestamp"], utc=True) - AS_OF_BEFORE
    frame = store.get_historical_features(entity_df=entities, features=store.get_feature_service(feature_service),
                                          full_feature_names=True).to_df()
    return frame.rename(columns={feature_column(ref): ref for ref in refs}).set_index(key)


def vector_matrix(frame: pd.DataFrame, refs: list[str]) -> np.ndarray:
    """Rows x refs as float64, missing values NaN."""
    return frame[refs].to_numpy(dtype=np.float64, na_value=np.nan)


def differing(served: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per value: True where served and point-in-time differ (unequal, or missing on one side only)."""
    return ~((served == expected) | (np.isnan(served) & np.isnan(expected)))
