"""The feature catalog: snapshot builder (Feast + Dagster + DuckDB stats + lineage), web page, JSON API, CLI search."""
