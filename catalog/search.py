"""Searching a catalog snapshot (pure Python: usable by the web server, the API and the CLI).

Every word of the query must be found somewhere; a feature's rank is the sum, over the words, of the
weight of the best place the word was found: the feature's name, then its description, then its view
(name, description), then tags, then anything else (owner, entities, services, models). Each match
says why it matched. The web page ranks with the same weights (FIELD_WEIGHTS, handed to its script)
over the same texts (`search_fields`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (field, label shown as the reason, weight): the order is the ranking promised to users.
FIELD_WEIGHTS: tuple[tuple[str, str, int], ...] = (
    ("name", "name", 100),
    ("description", "description", 30),
    ("view", "view", 10),
    ("tags", "tag", 3),
    ("other", "owner/entity/service", 1),
)
_EXACT_NAME_BONUS = 50  # the whole name typed: first


def search_fields(feature: dict[str, Any]) -> dict[str, str]:
    """The lower-cased texts a feature can be found by, one per FIELD_WEIGHTS field."""
    tag_items = {**feature.get("view_tags", {}), **feature.get("tags", {})}
    return {
        "name": feature["name"].lower(),
        "description": (feature.get("description") or "").lower(),
        "view": f'{feature["view"]} {feature.get("view_description") or ""}'.lower(),
        "tags": " ".join(f"{k}={v} {k}:{v}" for k, v in sorted(tag_items.items())).lower(),  # either way of writing it
        "other": " ".join([
            feature["id"], feature.get("dtype") or "", feature.get("owner") or "",
            *feature.get("entities", []), *feature.get("join_keys", []),
            *feature.get("feature_services", []), *feature.get("models", []),
        ]).lower(),
    }


def search_text(feature: dict[str, Any]) -> str:
    """Everything a feature can be found by, in one string."""
    return " ".join(search_fields(feature).values())


@dataclass(frozen=True)
class Match:
    feature: dict[str, Any]
    score: int
    reasons: tuple[str, ...]  # e.g. ('name: "spend"', 'tag: "fraud" in team=fraud')


def _tag_hit(tags: str, word: str) -> str:
    return next(tag for tag in tags.split() if word in tag)


def rank_features(features: list[dict[str, Any]], text: str) -> list[Match]:
    """Features matching every word of `text` (case-insensitive), best first, each with its reasons.
    An empty query returns everything, in snapshot order."""
    words = text.lower().split()
    if not words:
        return [Match(feature, 0, ()) for feature in features]
    matches = []
    for feature in features:
        fields = search_fields(feature)
        score, reasons = 0, []
        for word in words:
            found = next(((field, label, weight) for field, label, weight in FIELD_WEIGHTS if word in fields[field]), None)
            if found is None:
                break
            field, label, weight = found
            score += weight + (_EXACT_NAME_BONUS if field == "name" and word == fields["name"] else 0)
            detail = f" in {_tag_hit(fields['tags'], word)}" if field == "tags" else ""
            reasons.append(f'{label}: "{word}"{detail}')
        else:
            matches.append(Match(feature, score, tuple(reasons)))
    return sorted(matches, key=lambda match: (-match.score, match.feature["id"]))


def search_features(features: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The features of `rank_features`, best first."""
    return [match.feature for match in rank_features(features, text)]


def view_search_text(view: dict[str, Any]) -> str:
    """What a feature view row is filtered by: name, description, owner, entities, tags, feature names."""
    return " ".join([
        view["name"], view.get("description") or "", view.get("owner") or "", *view.get("entities", []),
        *(f"{k}={v}" for k, v in sorted(view.get("tags", {}).items())),
        *(feature["name"] for feature in view.get("features", [])),
    ]).lower()


def service_search_text(service: dict[str, Any]) -> str:
    """What a feature service row is filtered by: name, description, owner, views, features, models."""
    return " ".join([
        service["name"], service.get("description") or "", service.get("owner") or "",
        *service.get("feature_views", []), *service.get("models", []),
        *(f'{feature["view"]}:{feature["feature"]}' for feature in service.get("features", [])),
    ]).lower()


def matches_all_words(text: str, query: str) -> bool:
    return all(word in text for word in query.lower().split())
