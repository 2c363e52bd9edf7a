"""Searching a catalog snapshot (pure Python: usable by the web server, the API and the CLI)."""

from __future__ import annotations

from typing import Any


def search_text(feature: dict[str, Any]) -> str:
    """Everything a feature can be found by: names, description, owner, tags, entities, services, models."""
    parts = [
        feature["id"], feature["name"], feature["view"], feature.get("dtype") or "", feature.get("description") or "",
        feature.get("view_description") or "", feature.get("owner") or "",
        *(f"{k}:{v} {k}={v} {v}" for k, v in {**feature.get("view_tags", {}), **feature.get("tags", {})}.items()),
        *feature.get("entities", []), *feature.get("join_keys", []),
        *feature.get("feature_services", []), *feature.get("models", []),
    ]
    return " ".join(parts).lower()


def search_features(features: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Features matching every word of `text` (case-insensitive), best first: name hits before
    description/owner/tag hits. An empty query returns everything."""
    words = text.lower().split()
    if not words:
        return list(features)
    scored = []
    for feature in features:
        haystack = search_text(feature)
        if not all(word in haystack for word in words):
            continue
        name = feature["name"].lower()
        score = sum(3 if word == name else 2 if word in name else 1 if word in feature["view"].lower() else 0 for word in words)
        scored.append((-score, feature["id"], feature))
    return [feature for _, _, feature in sorted(scored, key=lambda item: item[:2])]
