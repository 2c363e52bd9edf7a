"""The catalog as a Dagster asset: after the feature tables and their online copies, write the
snapshot (catalog.json) and the static HTML pages to <state>/catalog.

Wire it in assets/definitions.py with `catalog_asset(settings, [view.name for view in views])`.
"""

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from core.settings import Settings

CATALOG_KEY = dg.AssetKey("catalog")


def catalog_asset(settings: "Settings", view_names: list[str]) -> dg.AssetsDefinition:
    """Unpartitioned `catalog` asset depending on features/<view> and online/<view> of every view; it
    builds the catalog of the platform `settings` describes."""
    names = sorted(view_names)
    deps = [dg.AssetKey([layer, name]) for name in names for layer in ("features", "online")]

    @dg.asset(
        key=CATALOG_KEY,
        deps=deps,
        group_name="catalog",
        kinds={"duckdb", "html"},
        description="Feature catalog: Feast definitions + Dagster status and checks + DuckDB statistics + lineage, "
        "as catalog.json and static HTML pages (`featurestack catalog` serves the same snapshot).",
    )
    def catalog(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from catalog.snapshot import publish

        snapshot, path = publish(settings, instance=context.instance)
        views = snapshot["feature_views"]
        for error in snapshot["errors"]:
            context.log.warning(error)
        return dg.MaterializeResult(metadata={
            "snapshot": dg.MetadataValue.path(str(path)),
            "index": dg.MetadataValue.url(f"file://{path.parent / 'index.html'}"),
            "features": len(snapshot["features"]),
            "feature_views": len(views),
            "feature_services": len(snapshot["feature_services"]),
            "models": len(snapshot["models"]),
            "stale_views": ", ".join(v["name"] for v in views if v["freshness"]["status"] == "stale") or "none",
            "failing_validation": ", ".join(v["name"] for v in views if v["validation"]["status"] == "failing") or "none",
            "offline_rows": sum(v["offline"]["rows"] for v in views),
            "stats_seconds": round(sum(v["offline"].get("stats_seconds") or 0 for v in views), 3),
            "build_seconds": snapshot["build_seconds"],
        })

    return catalog
