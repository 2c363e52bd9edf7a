"""Our Redis reader returns what Feast's SDK returns, on the same keys: values written by Feast's own
writer, a type mix with nulls, entities missing from one view or from all of them."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import redis

from core.redis_server import free_port, project_keys
from onlinestore.online_reader import OnlineFeatureReader, decode_numeric_column, online_store_client
from onlinestore.redis_layout import encode_value, layout_from_feature_view

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
ACCT_FEATURES = ("txn_count", "amount_mean", "small", "ratio", "flag")
SHOP_FEATURES = ("risk", "age_days")
# (user_id, txn_count, amount_mean, small, ratio, flag): None is a null value written by Feast.
ACCT_ROWS = [
    (1, 3, 12.5, 7, 0.5, True),
    (2, None, 99.25, None, None, False),
    (3, 2**40, None, -5, -1.25, None),
    (4, -17, -0.0, 2**31 - 1, 3.5, True),
    (5, 0, 1e300, -(2**31), 0.0, False),
]
SHOP_ROWS = [(10, 0.125, 30), (11, None, None), (12, 0.0, 2**53)]
MISSING = 987_654_321


@pytest.mark.parametrize(
    ("value_type", "values"),
    [
        ("int64", [0, 1, -1, 127, 128, 300, -300, 2**53, -(2**62), 2**63 - 1, -(2**63), None]),
        ("int32", [0, -5, 2**31 - 1, -(2**31), None]),
        ("double", [0.0, -2.5, 1e300, 5e-324, None, float("nan"), float("inf")]),
        ("float", [0.5, -1.25, None]),
        ("bool", [True, False, None]),
    ],
)
def test_vectorized_decode_matches_the_values_encoded(value_type, values):
    decoded = decode_numeric_column([encode_value(v, value_type) for v in values], value_type)
    expected = [math.nan if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
    np.testing.assert_array_equal(decoded, np.array(expected))


@pytest.fixture(scope="module")
def feast_written(tmp_path_factory, redis_url):
    """A Feast repo of two views (user- and merchant-keyed) whose rows Feast's own writer put in Redis."""
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, RepoConfig
    from feast.data_format import ParquetFormat
    from feast.types import Bool, Float32, Float64, Int32, Int64
    from feast.value_type import ValueType

    from core.redis_server import feast_connection_string

    repo = tmp_path_factory.mktemp("reader_repo")
    project = f"fs_reader_{uuid.uuid4().hex[:10]}"
    store = FeatureStore(config=RepoConfig(
        project=project, registry=str(repo / "registry.db"), provider="local",
        online_store={"type": "redis", "connection_string": feast_connection_string(redis_url)},
        offline_store={"type": "duckdb"}, entity_key_serialization_version=3, repo_path=str(repo),
    ))
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64)

    def source(name: str) -> FileSource:
        return FileSource(path=str(repo / name), file_format=ParquetFormat(), timestamp_field="event_timestamp")

    acct = FeatureView(name="acct", entities=[user], ttl=timedelta(days=7), source=source("acct"), schema=[
        Field(name="txn_count", dtype=Int64), Field(name="amount_mean", dtype=Float64), Field(name="small", dtype=Int32),
        Field(name="ratio", dtype=Float32), Field(name="flag", dtype=Bool)])
    shop = FeatureView(name="shop", entities=[merchant], ttl=timedelta(days=7), source=source("shop"), schema=[
        Field(name="risk", dtype=Float64), Field(name="age_days", dtype=Int64)])
    service = FeatureService(name="reader_service", features=[shop[["age_days", "risk"]], acct])
    store.apply([user, merchant, acct, shop, service])

    acct_df = pd.DataFrame(ACCT_ROWS, columns=["user_id", *ACCT_FEATURES]).astype(object)
    acct_df["user_id"] = acct_df["user_id"].astype("int64")
    acct_df["event_timestamp"] = NOW
    shop_df = pd.DataFrame(SHOP_ROWS, columns=["merchant_id", *SHOP_FEATURES]).astype(object)
    shop_df["merchant_id"] = shop_df["merchant_id"].astype("int64")
    shop_df["event_timestamp"] = NOW
    store.write_to_online_store("acct", acct_df)
    store.write_to_online_store("shop", shop_df)
    yield store, project
    client = redis.Redis.from_url(redis_url)
    keys = list(project_keys(client, project))
    if keys:
        client.delete(*keys)
    client.close()


def _reader(store, project: str, client: redis.Redis) -> OnlineFeatureReader:
    service = store.get_feature_service("reader_service")
    refs = [f"{p.name_to_use()}:{f.name}" for p in service.feature_view_projections for f in p.features]
    entity_types = {entity.join_key: entity.value_type for entity in store.list_entities()}
    layouts = [layout_from_feature_view(store.get_feature_view(name), entity_types) for name in ("acct", "shop")]
    return OnlineFeatureReader(client, project, layouts, refs)


def test_reader_equals_feast_get_online_features(feast_written, redis_url):
    store, project = feast_written
    reader = _reader(store, project, redis.Redis.from_url(redis_url))
    assert reader.feature_refs[:2] == ["shop:age_days", "shop:risk"]  # the service's order, not the view's
    user_ids = np.array([1, 2, 3, 4, 5, MISSING, 1, 2], dtype=np.int64)
    merchant_ids = np.array([10, 11, 12, MISSING, 10, 10, MISSING, 12], dtype=np.int64)

    ours = reader.read({"user_id": user_ids, "merchant_id": merchant_ids})
    feast = store.get_online_features(
        features=store.get_feature_service("reader_service"),
        entity_rows=[{"user_id": int(u), "merchant_id": int(m)} for u, m in zip(user_ids, merchant_ids)],
        full_feature_names=True,
    ).to_dict()

    assert ours.names == reader.feature_refs and ours.values.shape == (len(user_ids), len(reader.feature_refs))
    for column, ref in enumerate(reader.feature_refs):
        theirs = np.array([math.nan if v is None else float(v) for v in feast[ref.replace(":", "__")]])
        np.testing.assert_array_equal(ours.values[:, column], theirs, err_msg=ref)
    # Missing flags per view (acct, shop in the order the service lists its views: shop first).
    assert ours.views == ["shop", "acct"]
    np.testing.assert_array_equal(ours.missing_entity[:, 0], merchant_ids == MISSING)
    np.testing.assert_array_equal(ours.missing_entity[:, 1], user_ids == MISSING)
    np.testing.assert_array_equal(ours.row_missing(), (user_ids == MISSING) | (merchant_ids == MISSING))
    # A null value of a present entity is NaN but not "missing".
    row_of_user_2 = 1
    assert np.isnan(ours.values[row_of_user_2, reader.feature_refs.index("acct:txn_count")])
    assert not ours.missing_entity[row_of_user_2, 1]
    # Every entity five times over: each is read once and fanned out to its rows.
    big = reader.read({"user_id": np.tile(user_ids, 5), "merchant_id": np.tile(merchant_ids, 5)})
    np.testing.assert_array_equal(big.values, np.tile(ours.values, (5, 1)))
    np.testing.assert_array_equal(big.missing_entity, np.tile(ours.missing_entity, (5, 1)))
    filled = ours.filled({"acct:txn_count": -1.0})
    assert filled[row_of_user_2, reader.feature_refs.index("acct:txn_count")] == -1.0
    assert not np.isnan(filled).any() and (filled[~np.isnan(ours.values)] == ours.values[~np.isnan(ours.values)]).all()
    assert (ours.filled(7.0)[5, [reader.feature_refs.index(r) for r in reader.feature_refs if r.startswith("acct:")]] == 7.0).all()
    reader._client.close()


def test_reader_handles_empty_batches_and_unknown_refs(feast_written, redis_url):
    store, project = feast_written
    reader = _reader(store, project, redis.Redis.from_url(redis_url))
    empty = reader.read({"user_id": np.array([], np.int64), "merchant_id": np.array([], np.int64)})
    assert empty.values.shape == (0, len(reader.feature_refs))
    with pytest.raises(KeyError, match="merchant_id"):
        reader.read({"user_id": np.array([1], np.int64)})
    with pytest.raises(ValueError, match="acct:nope"):
        OnlineFeatureReader(reader._client, project, [], ["acct:nope"])
    reader._client.close()


def test_reader_fails_fast_when_redis_is_unreachable(feast_written):
    store, project = feast_written

    client = online_store_client(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    reader = _reader(store, project, client)
    with pytest.raises(redis.ConnectionError):
        reader.read({"user_id": np.array([1], np.int64), "merchant_id": np.array([10], np.int64)})


@pytest.mark.parametrize(
    "join_keys",
    [(("user_id", "int32"),), (("country", "string"),), (("country", "string"), ("user_id", "int64")),
     (("shop_id", "int32"), ("user_id", "int64"))],
    ids=["int32", "string", "string+int64", "int32+int64"],
)
def test_reader_finds_what_the_writer_wrote_for_every_key_shape(redis_url, join_keys):
    """Numeric keys are stamped into a command template, string keys encoded one by one: both must name
    the keys onlinestore.online_writer wrote (Feast's v3 keys, tested against Feast in test_redis_layout)."""
    import pyarrow as pa

    from onlinestore.online_writer import publish_latest
    from onlinestore.redis_layout import ViewLayout

    project = f"fs_test_{uuid.uuid4().hex[:12]}"
    layout = ViewLayout("keyed", join_keys, (("score", "double"),))
    samples = {"int32": [7, -(2**31), 2**31 - 1], "int64": [2**40, -1, 0], "string": ["fr", "", "日本"]}
    arrow = {"int32": pa.int32(), "int64": pa.int64(), "string": pa.string()}
    columns = {name: pa.array(samples[value_type], arrow[value_type]) for name, value_type in join_keys}
    table = pa.table({**columns, "score": pa.array([1.5, -2.0, 3.25]),
                      "event_timestamp": pa.array([NOW] * 3, pa.timestamp("us", tz="UTC"))})
    client = redis.Redis.from_url(redis_url)
    try:
        assert publish_latest(client, project, layout, table).written == 3
        reader = OnlineFeatureReader(client, project, [layout], ["keyed:score"])
        rows = [2, 0, 1, 2, 0]  # repeats, in another order
        entities = {name: [samples[value_type][row] for row in rows] for name, value_type in join_keys}
        result = reader.read(entities)
        np.testing.assert_array_equal(result.values[:, 0], np.array([3.25, 1.5, -2.0, 3.25, 1.5]))
        assert not result.missing_entity.any()
        unknown = {name: [samples[value_type][0]] for name, value_type in join_keys}
        unknown[join_keys[-1][0]] = ["zz"] if join_keys[-1][1] == "string" else [12345]
        assert reader.read(unknown).missing_entity.all()
    finally:
        keys = list(project_keys(client, project))
        if keys:
            client.delete(*keys)
        client.close()
