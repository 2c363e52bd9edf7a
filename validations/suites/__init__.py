"""One expectation suite per raw table, named after it (validated on the landing partition, before the
contract splits it). A feature table's suite is built from its feature view instead
(validations/feature_suite.py: the schema's expectations plus the view module's `expectations`).

Each module here defines TABLE, KEYS (the columns that identify a row), optionally CONTRACT and
`prepare(df)`, and `expectations(params)`, the list of GX 1.x expectations for one partition; `params`
carries what depends on the partition (its day, the previous partition's row count). Every module of
this package is a suite: adding one is adding the file.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path


def suite_names() -> list[str]:
    """The raw tables with a suite: the modules of this package."""
    return sorted(info.name for info in pkgutil.iter_modules([str(Path(__file__).parent)]) if not info.name.startswith("_"))
