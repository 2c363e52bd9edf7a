from __future__ import annotations

import pytest

from pipelines.spark import build_spark_session


@pytest.fixture(scope="session")
def spark():
    session = build_spark_session(master="local[2]", driver_memory="2g", shuffle_partitions=2, app_name="featurestack-tests")
    yield session
    session.stop()
