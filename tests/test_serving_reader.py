"""Our Redis reader returns what Feast's SDK returns, on the same keys, missing entities included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import redis

from featurestack.feast_repo import open_store
from serving.online_reader import OnlineFeatureReader, decode_numeric_column
from serving.redis_layout import encode_value, layout_from_feature_view

MISSING_ID = 987_654_321


@pytest.mark.parametrize(
    ("value_type", "values"),
    [
        ("int64", [0, 1, -1, 127, 128, 300, -300, 2**53, -(2**62), None]),
        ("int32", [0, -5, 2**31 - 1, -(2**31), None]),
        ("double", [0.0, -2.5, 1e300, 5e-324, None, float("nan")]),
        ("float", [0.5, -1.25, None]),
        ("bool", [True, False, None]),
    ],
)
def test_vectorized_decode_matches_the_values_encoded(value_type, values):
    decoded = decode_numeric_column([encode_value(v, value_type) for v in values], value_type)
    expected = [math.nan if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
    np.testing.assert_array_equal(decoded, np.array(expected))


def test_reader_equals_feast_get_online_features(platform):
    settings = platform.settings
    store = open_store(settings, platform.redis.url)
    service = store.get_feature_service("fraud_detection_v1")
    refs = [f"{p.name_to_use()}:{f.name}" for p in service.feature_view_projections for f in p.features]
    entity_types = {entity.join_key: entity.value_type for entity in store.list_entities()}
    layouts = [layout_from_feature_view(store.get_feature_view(p.name), entity_types) for p in service.feature_view_projections]
    user_ids = np.array(list(range(1, 120)) + [MISSING_ID], dtype=np.int64)
    merchant_ids = np.array([(i % 40) + 1 for i in range(119)] + [MISSING_ID], dtype=np.int64)

    client = redis.Redis.from_url(platform.redis.url)
    ours = OnlineFeatureReader(client, settings.feast_project, layouts, refs).read({"user_id": user_ids, "merchant_id": merchant_ids})
    client.close()
    feast = store.get_online_features(
        features=service, entity_rows=[{"user_id": int(u), "merchant_id": int(m)} for u, m in zip(user_ids, merchant_ids)]
    ).to_dict()

    assert ours.names == refs
    for column, ref in enumerate(refs):
        theirs = np.array([math.nan if v is None else float(v) for v in feast[ref.split(":")[1]]])
        np.testing.assert_array_equal(ours.values[:, column], theirs, err_msg=ref)
    assert ours.missing_entity[-1].all() and np.isnan(ours.values[-1]).all()
    assert not ours.missing_entity[:-1].all()  # real entities were found
