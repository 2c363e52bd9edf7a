"""The windowed views of the Feast registry, as the stream needs them: declaration + Redis layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.feast_repo import open_store
from core.settings import Settings
from core.windows import WindowedView, is_windowed
from onlinestore.redis_layout import ViewLayout, layout_from_feature_view

if TYPE_CHECKING:
    from feast import FeatureStore


@dataclass(frozen=True)
class StreamedView:
    spec: WindowedView
    layout: ViewLayout


def streamed_views(settings: Settings, redis_url: str) -> dict[str, StreamedView]:
    """Every registered view declared as windowed aggregations, by name (imports feast: seconds)."""
    return windowed_views(open_store(settings, redis_url))


def windowed_views(store: FeatureStore) -> dict[str, StreamedView]:
    """The windowed views a Feast store's registry holds, by name."""
    entities = store.list_entities()
    join_key = {entity.name: entity.join_key for entity in entities}
    value_types = {entity.join_key: entity.value_type for entity in entities}
    views = {}
    for view in store.list_feature_views():
        if is_windowed(view):
            keys = [join_key[name] for name in view.entities]
            if len(keys) != 1:
                raise ValueError(f"windowed view {view.name!r}: one entity expected, got {view.entities}")
            views[view.name] = StreamedView(WindowedView.from_feature_view(view, keys[0]), layout_from_feature_view(view, value_types))
    return views
