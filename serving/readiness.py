"""Readiness of the online store for a model: does Redis hold any of the model's features?

A Redis that answers but is empty (restarted without its data) or is the wrong one (another project)
would make every answer "all features missing"; the server is then not ready. The probe remembers
one key that held the model's features and only re-checks it; when it is gone, it scans the project's
keys again, a bounded number of SCAN steps per probe (resuming where the last probe stopped), so a
probe of a large foreign Redis stays short.
"""

from __future__ import annotations

import redis

from onlinestore.redis_layout import timestamp_field

SCAN_COUNT = 10_000  # keys examined per SCAN step
STEPS_PER_PROBE = 10


class FeatureProbe:
    def __init__(self, client: redis.Redis, project: str, views: list[str]):
        self.client = client
        self.project = project
        self.views = list(views)
        self._fields = [timestamp_field(view) for view in self.views]  # every published row has its view's _ts field
        self._match = b"*" + project.encode()  # Feast ends each entity key with the project name
        self._known_key: bytes | None = None
        self._cursor = 0

    def _holds_model_views(self, keys: list[bytes]) -> bytes | None:
        pipeline = self.client.pipeline(transaction=False)
        for key in keys:
            pipeline.hmget(key, self._fields)
        for key, values in zip(keys, pipeline.execute()):
            if any(value is not None for value in values):
                return key
        return None

    def holds_features(self) -> bool:
        """True once some key of the project holds a row of one of the model's views. Raises
        redis.RedisError when Redis does not answer."""
        if self._known_key is not None and self._holds_model_views([self._known_key]):
            return True
        self._known_key = None
        for _ in range(STEPS_PER_PROBE):
            self._cursor, keys = self.client.scan(self._cursor, match=self._match, count=SCAN_COUNT)
            found = self._holds_model_views(keys) if keys else None
            if found is not None:
                self._known_key = found
                return True
            if self._cursor == 0:  # a full pass found nothing
                return False
        return False

    def describe_absence(self) -> str:
        return (f"the online store holds no features of the model's views {self.views} in Feast project {self.project!r} "
                "(empty or wrong Redis): publish them with `featurestack run`")
