"""Input contracts of the raw tables, as plain data (no Spark): pipelines/raw.py derives the row-level
quarantine rules from them, validations/suites the expectation suites, serving its request bounds."""

from __future__ import annotations

# An amount above this is absurd for a card payment: quarantined in raw, refused (422) by serving.
MAX_AMOUNT = 1_000_000.0
