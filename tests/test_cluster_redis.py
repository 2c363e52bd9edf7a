"""Publish and the fast reader against a real 3-master Redis Cluster (redis-server --cluster-enabled yes on
free local ports + redis-cli --cluster create), and Feast (redis_type: redis_cluster) reads the same values."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
import redis
from redis.cluster import RedisCluster

from cluster_support import OwnRedis, free_cluster_port
from core.redis_server import feast_connection_string, project_keys, redis_client
from onlinestore.online_writer import publish_latest
from onlinestore.redis_layout import ViewLayout

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-cli")), reason="needs redis-server and redis-cli")]

VIEW = "user_stats"
FEATURES = (("txn_count", "int64"), ("amount_mean", "double"), ("top_merchant", "string"), ("is_new", "bool"))
LAYOUT = ViewLayout(VIEW, (("user_id", "int64"),), FEATURES, ttl=timedelta(days=1))
NOW = datetime.now(timezone.utc).replace(microsecond=654321) - timedelta(hours=1)
ENTITIES = 300


@pytest.fixture(scope="module")
def cluster_nodes(tmp_path_factory):
    base = tmp_path_factory.mktemp("redis-cluster")
    nodes = []
    try:
        for index in range(3):
            port = free_cluster_port()
            node = OwnRedis(port, base / str(index), extra_args=(
                "--cluster-enabled", "yes", "--cluster-config-file", str(base / str(index) / "nodes.conf"),
                "--cluster-node-timeout", "2000", "--appendonly", "no"))
            nodes.append(node.start())
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while not all(redis.Redis(port=node.port).cluster("info")["cluster_state"] == "ok" for node in nodes):
            assert time.monotonic() < deadline, "cluster never reached cluster_state:ok"
            time.sleep(0.2)
        yield addresses
    finally:
        for node in nodes:
            node.stop()


def _rows(user_ids, stamp, label: str) -> pa.Table:
    ids = np.asarray(user_ids, dtype=np.int64)
    return pa.table({
        "user_id": pa.array(ids),
        "event_timestamp": pa.array([stamp] * len(ids), pa.timestamp("us", tz="UTC")),
        "txn_count": pa.array(ids * 3),
        "amount_mean": pa.array([None if i % 7 == 0 else i / 4 for i in ids.tolist()], pa.float64()),
        "top_merchant": pa.array([f"{label}_{i}" for i in ids.tolist()]),
        "is_new": pa.array([i % 2 == 0 for i in ids.tolist()]),
    })


def _feast_store(tmp_path, project: str, connection_string: str):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig
    from feast.data_format import ParquetFormat
    from feast.types import Bool, Float64, Int64, String
    from feast.value_type import ValueType

    config = RepoConfig(
        project=project, registry=str(tmp_path / "registry.db"), provider="local",
        online_store={"type": "redis", "redis_type": "redis_cluster", "connection_string": connection_string},
        offline_store={"type": "duckdb"}, entity_key_serialization_version=3, repo_path=str(tmp_path),
    )
    store = FeatureStore(config=config)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name=VIEW, entities=[user], ttl=LAYOUT.ttl,
        schema=[Field(name="user_id", dtype=Int64), Field(name="txn_count", dtype=Int64), Field(name="amount_mean", dtype=Float64),
                Field(name="top_merchant", dtype=String), Field(name="is_new", dtype=Bool)],
        source=FileSource(path=str(tmp_path / "data"), file_format=ParquetFormat(), timestamp_field="event_timestamp"),
    )
    store.apply([user, view])
    return store


def test_publish_to_a_redis_cluster_and_feast_reads_it(cluster_nodes, tmp_path):
    project = f"fs_cluster_{uuid.uuid4().hex[:8]}"
    url = f"redis://{cluster_nodes[0]}/0"
    client = redis_client(url, redis_type="redis_cluster")
    assert isinstance(client, RedisCluster)
    try:
        first = publish_latest(client, project, LAYOUT, _rows(range(ENTITIES), NOW, "v1"), batch_size=128)
        assert (first.entities, first.written) == (ENTITIES, ENTITIES)
        # Keys are spread over all three masters.
        per_node = [redis.Redis.from_url(f"redis://{address}").dbsize() for address in cluster_nodes]
        assert all(count > 0 for count in per_node) and sum(per_node) == ENTITIES, per_node
        # Monotonic on a cluster too: older rows are skipped, newer ones written.
        mixed = pa.concat_tables([_rows(range(0, 100), NOW - timedelta(seconds=1), "older"),
                                  _rows(range(100, 150), NOW + timedelta(seconds=1), "v2")])
        second = publish_latest(client, project, LAYOUT, mixed, key_ttl_seconds=3600)
        assert (second.written, second.skipped_not_newer) == (50, 100)

        store = _feast_store(tmp_path, project, feast_connection_string(url, "redis_cluster", cluster_nodes[1:]))
        wanted = [0, 7, 99, 100, 149, 150, ENTITIES - 1, 10_000]
        online = store.get_online_features(
            features=[f"{VIEW}:{name}" for name, _ in FEATURES], entity_rows=[{"user_id": u} for u in wanted]
        ).to_dict()
        labels = ["v1" if u < 100 or u >= 150 else "v2" for u in wanted[:-1]]
        assert online["top_merchant"] == [f"{label}_{u}" for label, u in zip(labels, wanted[:-1])] + [None]
        assert online["txn_count"] == [u * 3 for u in wanted[:-1]] + [None]
        assert online["amount_mean"] == [None if u % 7 == 0 else u / 4 for u in wanted[:-1]] + [None]
        assert online["is_new"] == [u % 2 == 0 for u in wanted[:-1]] + [None]

    finally:
        keys = [key for node in cluster_nodes for key in redis.Redis.from_url(f"redis://{node}").scan_iter(match=b"*" + project.encode())]
        for key in keys:
            client.delete(key)
        client.close()


def test_fast_reader_on_a_redis_cluster(cluster_nodes):
    project = f"fs_cluster_{uuid.uuid4().hex[:8]}"
    client = redis_client(f"redis://{cluster_nodes[0]}/0", redis_type="redis_cluster")
    try:
        publish_latest(client, project, LAYOUT, _rows(range(50), NOW, "v1"))
        from onlinestore.online_reader import OnlineFeatureReader

        numeric = ["txn_count", "amount_mean", "is_new"]
        reader = OnlineFeatureReader(client, project, [LAYOUT], [f"{VIEW}:{name}" for name in numeric])
        fast = reader.read({"user_id": [0, 3, 49, 10_000]})
        assert fast.row_missing().tolist() == [False, False, False, True]
        np.testing.assert_array_equal(fast.values[:3, 0], [0.0, 9.0, 147.0])
        np.testing.assert_array_equal(fast.values[:3, 1], [np.nan, 0.75, np.nan])
    finally:
        for node in cluster_nodes:
            node_client = redis.Redis.from_url(f"redis://{node}")
            for key in node_client.scan_iter(match=b"*" + project.encode()):
                node_client.delete(key)
        client.close()


def test_project_keys_and_the_republish_probe_scan_every_primary(cluster_nodes):
    from featurestack.platform_run import _redis_holds_project

    project = f"fs_cluster_{uuid.uuid4().hex[:8]}"
    url = f"redis://{cluster_nodes[0]}/0"  # the URL names one node; the probe must look at all three
    client = redis_client(url, redis_type="redis_cluster")
    nodes = {address: redis.Redis.from_url(f"redis://{address}") for address in cluster_nodes}
    keys = {f"entity:{i}:".encode() + project.encode() for i in range(200)}
    other = f"other_{uuid.uuid4().hex[:8]}".encode()
    try:
        for key in keys:
            client.set(key, b"1")
        client.set(b"entity:0:" + other, b"1")  # another project's key is not counted
        per_node = {address: sum(1 for _ in node.scan_iter(match=b"*" + project.encode())) for address, node in nodes.items()}
        assert all(count > 0 for count in per_node.values()) and sum(per_node.values()) == len(keys), per_node
        found = list(project_keys(client, project))
        assert len(found) == len(keys) and set(found) == keys
        # One node alone (what a plain client on the URL's node scanned) sees only its share.
        assert set(project_keys(nodes[cluster_nodes[0]], project)) < keys
        assert _redis_holds_project(url, project, "redis_cluster")

        # Only keys on the nodes the URL does not name: still found.
        first_node_port = int(cluster_nodes[0].rsplit(":", 1)[1])
        elsewhere = {key for key in keys if client.get_node_from_key(key).port != first_node_port}
        client.delete(*(keys - elsewhere))  # redis-py splits a multi-key DEL by slot
        assert elsewhere and set(project_keys(client, project)) == elsewhere
        assert next(project_keys(nodes[cluster_nodes[0]], project), None) is None
        assert _redis_holds_project(url, project, "redis_cluster")

        for key in elsewhere:
            client.delete(key)
        assert list(project_keys(client, project)) == []
        assert not _redis_holds_project(url, project, "redis_cluster")
        assert list(project_keys(client, other.decode())) == [b"entity:0:" + other]
    finally:
        for node in nodes.values():
            for key in [*node.scan_iter(match=b"*" + project.encode()), *node.scan_iter(match=b"*" + other)]:
                node.delete(key)
            node.close()
        client.close()


def test_serving_app_reads_the_cluster_when_redis_type_is_redis_cluster(cluster_nodes, tmp_path):
    """`featurestack serve` with REDIS_TYPE=redis_cluster: the app builds a cluster client (a plain
    client on one node would get MOVED for most keys) and serves the values published to the cluster."""
    from dataclasses import replace

    import torch
    from fastapi.testclient import TestClient

    from core.artifacts import ModelManifest, ViewPin, artifact_dir
    from core.settings import load_settings
    from serving.app import create_app
    from training.model import FraudMLP, save_numpy_weights

    project = f"fs_cluster_{uuid.uuid4().hex[:8]}"
    url = f"redis://{cluster_nodes[0]}/0"
    merchants = ViewLayout("merchant_stats", (("merchant_id", "int64"),), (("rate", "double"),))
    refs = (f"{VIEW}:txn_count", f"{VIEW}:amount_mean", "merchant_stats:rate")
    client = redis_client(url, redis_type="redis_cluster")
    try:
        publish_latest(client, project, LAYOUT, _rows(range(ENTITIES), NOW, "v1"))
        publish_latest(client, project, merchants, pa.table({
            "merchant_id": pa.array(range(20), pa.int64()), "rate": pa.array([m / 100 for m in range(20)], pa.float64()),
            "event_timestamp": pa.array([NOW] * 20, pa.timestamp("us", tz="UTC"))}))
        settings = load_settings()
        manifest = ModelManifest(
            model="fraud_mlp", version="cluster-v1", project=project, feature_service="fraud_detection_v1", feature_refs=refs,
            request_features=("amount_log", "amount_to_user_mean_7d"), user_mean_feature=f"{VIEW}:amount_mean",
            n_inputs=len(refs) + 2 + 2,
            feature_views={layout.name: ViewPin("hand-made", layout.join_keys, layout.features) for layout in (LAYOUT, merchants)})
        model_dir = artifact_dir(tmp_path / "models", manifest.feature_service, manifest.version)
        model_dir.mkdir(parents=True)
        model = FraudMLP(manifest.n_inputs)
        torch.save(model.state_dict(), model_dir / manifest.model_file)
        save_numpy_weights(model, model_dir / manifest.weights_file)
        manifest.write(model_dir)
        settings = replace(settings, state_dir=tmp_path, redis_url=url, redis_type="redis_cluster", feast_project=project,
                           serving=replace(settings.serving, model_dir=str(model_dir), device="cpu"))
        with TestClient(create_app(settings)) as http:
            assert http.get("/readyz").status_code == 200
            entities = [{"user_id": u, "merchant_id": u % 20} for u in (1, 3, 7, 299)] + [{"user_id": 10_000, "merchant_id": 3}]
            response = http.post("/features", json={"entities": entities})
            assert response.status_code == 200, response.text
            rows = response.json()["rows"]
            assert [row["features"][refs[0]] for row in rows] == [3.0, 9.0, 21.0, 897.0, None]
            assert [row["features"][refs[1]] for row in rows] == [0.25, 0.75, None, 74.75, None]
            assert [row["features"][refs[2]] for row in rows] == [0.01, 0.03, 0.07, 0.19, 0.03]
            assert rows[-1]["missing_views"] == [VIEW]
            predicted = http.post("/predict", json={"transactions": [{**e, "amount": 12.0} for e in entities]})
            assert predicted.status_code == 200 and len(predicted.json()["predictions"]) == len(entities)
    finally:
        for node in cluster_nodes:
            node_client = redis.Redis.from_url(f"redis://{node}")
            for key in node_client.scan_iter(match=b"*" + project.encode()):
                node_client.delete(key)
        client.close()
