"""featurestack: a feature-store-centric ML data platform (Dagster + Spark + Feast + Redis)."""
