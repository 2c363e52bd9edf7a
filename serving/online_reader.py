"""Fast reader of Feast's Redis layout: one pipelined HMGET per entity and view, values decoded
column-wise with numpy into a float matrix (NaN where Feast would return None). No feast import.

Equal to `FeatureStore.get_online_features` on the same keys (tests/test_serving_reader.py), at a
fraction of its cost: no protobuf objects, no per-value Python conversion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import redis

from serving.redis_layout import ViewLayout, encode_entity_key_column, feature_field

_MAX_VALUE_BYTES = 11  # tag + up to a 10-byte varint (or 8 bytes of a double)


@dataclass(frozen=True)
class OnlineFeatures:
    names: list[str]  # "view:feature", in the requested order
    values: np.ndarray  # float64 [rows, features]; NaN where the value is missing or null
    missing_entity: np.ndarray  # bool [rows, views]: the entity has no row of that view
    views: list[str]

    def row_missing(self) -> np.ndarray:
        """Per row: any view had no value for its entity."""
        return self.missing_entity.any(axis=1)


def _padded(values: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """Values as a zero-padded uint8 matrix [n, 11] plus their lengths (0 for missing/null)."""
    lengths = np.fromiter((len(value) if value else 0 for value in values), dtype=np.int64, count=len(values))
    if (lengths > _MAX_VALUE_BYTES).any():
        raise ValueError("a non-numeric value where a numeric feature was expected")
    matrix = np.zeros((len(values), _MAX_VALUE_BYTES), dtype=np.uint8)
    if lengths.any():
        data = np.frombuffer(b"".join(value for value in values if value), dtype=np.uint8)
        rows = np.repeat(np.arange(len(values)), lengths)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        matrix[rows, np.arange(len(data)) - starts] = data
    return matrix, lengths


def decode_numeric_column(values: Sequence[bytes | None], value_type: str) -> np.ndarray:
    """Serialized feast Values of one numeric type -> float64 (NaN for empty/null), vectorized."""
    matrix, lengths = _padded(values)
    if value_type == "double":
        decoded = np.ascontiguousarray(matrix[:, 1:9]).view("<f8").ravel().astype(np.float64)
    elif value_type == "float":
        decoded = np.ascontiguousarray(matrix[:, 1:5]).view("<f4").ravel().astype(np.float64)
    elif value_type in ("int64", "int32", "bool"):
        payload = matrix[:, 1:].astype(np.uint64)
        # Byte k belongs to the varint while every earlier byte had its continuation bit set.
        continues = np.concatenate([np.ones((len(values), 1), dtype=bool), payload[:, :-1] >= 0x80], axis=1)
        included = np.logical_and.accumulate(continues, axis=1)
        shifts = (np.arange(payload.shape[1], dtype=np.uint64) * np.uint64(7))
        raw = np.bitwise_or.reduce(((payload & np.uint64(0x7F)) << shifts) * included, axis=1)
        decoded = raw.view(np.int64).astype(np.float64)
    else:
        raise ValueError(f"feature type {value_type!r} cannot be read as a number")
    # Empty values are nulls; a null_val message (tag 19 << 3) is one too.
    decoded[(lengths == 0) | (matrix[:, 0] == 0x98)] = np.nan
    return decoded


class OnlineFeatureReader:
    """Reads `feature_refs` ("view:feature") of the given views for batches of entities."""

    def __init__(self, client: redis.Redis, project: str, layouts: Sequence[ViewLayout], feature_refs: Sequence[str]):
        self._client = client
        self._project = project
        by_name = {layout.name: layout for layout in layouts}
        self.feature_refs = list(feature_refs)
        self._plan: list[tuple[ViewLayout, list[tuple[int, bytes, str]]]] = []
        for view_name in dict.fromkeys(ref.split(":", 1)[0] for ref in self.feature_refs):
            layout = by_name[view_name]
            types = dict(layout.features)
            columns = [
                (position, feature_field(view_name, ref.split(":", 1)[1]), types[ref.split(":", 1)[1]])
                for position, ref in enumerate(self.feature_refs)
                if ref.split(":", 1)[0] == view_name
            ]
            self._plan.append((layout, columns))
        self.join_keys = sorted({key for layout, _ in self._plan for key, _ in layout.join_keys})

    def _keys(self, layout: ViewLayout, entities: Mapping[str, Sequence], rows: int) -> list[bytes]:
        table = pa.table({name: pa.array(np.asarray(entities[name])) for name, _ in layout.join_keys})
        suffix = self._project.encode()
        return [key + suffix for key in encode_entity_key_column(table, layout.join_keys).to_list()]

    def read(self, entities: Mapping[str, Sequence]) -> OnlineFeatures:
        rows = len(next(iter(entities.values()))) if entities else 0
        pipe = self._client.pipeline(transaction=False)
        for layout, columns in self._plan:
            fields = [field for _, field, _ in columns] + [layout.ts_field]
            for key in self._keys(layout, entities, rows):
                pipe.hmget(key, fields)
        replies = pipe.execute()
        values = np.full((rows, len(self.feature_refs)), np.nan)
        missing = np.zeros((rows, len(self._plan)), dtype=bool)
        for view_index, (_layout, columns) in enumerate(self._plan):
            view_replies = replies[view_index * rows : (view_index + 1) * rows]
            missing[:, view_index] = [reply[-1] is None for reply in view_replies]
            for column_index, (position, _field, value_type) in enumerate(columns):
                values[:, position] = decode_numeric_column([reply[column_index] for reply in view_replies], value_type)
        return OnlineFeatures(names=self.feature_refs, values=values, missing_entity=missing, views=[layout.name for layout, _ in self._plan])
