"""Expectation suites (Great Expectations 1.x) per raw and feature table, and their runner."""

import sys


def import_great_expectations():
    """Import GX safely in any process. GX probes pyspark.sql.connect, whose dependency check calls
    sys.exit(0) ("Skipping doctests") when `__main__` has neither __spec__ nor __file__ and
    google.rpc is missing, which is the case in Dagster's multiprocess step workers and `python -c`.
    Looking interactive for the length of the import makes it raise ImportError instead, which GX
    handles (no Spark Connect support, which we do not use)."""
    if "great_expectations" in sys.modules:
        return sys.modules["great_expectations"]
    main = sys.modules.get("__main__")
    looks_like_doctest = (
        main is not None and getattr(main, "__spec__", None) is None and not hasattr(main, "__file__") and not hasattr(sys, "ps1")
    )
    if looks_like_doctest:
        sys.ps1 = ""
    try:
        import great_expectations
    finally:
        if looks_like_doctest:
            del sys.ps1
    return great_expectations
