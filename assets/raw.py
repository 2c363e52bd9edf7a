"""Raw assets: landing zone -> contract-checked raw tables, bad rows to quarantine."""


import time

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from assets.partitions import partition_date
from assets.resources import PlatformResource
from core.lake import RAW_DIMENSION_TABLES, RAW_PARTITIONED_TABLES, partition_dir
from pipelines.offline_store import write_partition, write_table
from pipelines.raw import CONTRACTS, QUARANTINE_REASON, RawContract, split_valid_and_quarantined


def raw_asset(contract: RawContract, partitions_def: dg.PartitionsDefinition | None) -> dg.AssetsDefinition:
    """Daily-partitioned when `partitions_def` is given (facts), else one snapshot (dimensions)."""
    kind = "One day of" if partitions_def else "The snapshot of"

    @dg.asset(
        key=["raw", contract.table],
        partitions_def=partitions_def,
        group_name="raw",
        kinds={"spark", "parquet"},
        description=f"{kind} landing {contract.table}, checked against its contract; bad rows quarantined with a reason.",
    )
    def _asset(context: dg.AssetExecutionContext, platform: PlatformResource, pyspark: LazyPySparkResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        settings = platform.settings
        day = partition_date(context) if partitions_def else None
        landing_path = settings.landing_dir / contract.table
        if day is not None:
            landing_path = partition_dir(landing_path, day)
        if not landing_path.exists():
            raise FileNotFoundError(f"no landing data for {contract.table}: {landing_path} (run `featurestack generate`)")
        landing = pyspark.spark_session.read.parquet(str(landing_path))
        landing_rows = landing.count()
        valid, quarantined = split_valid_and_quarantined(landing, contract, day)
        if day is None:
            raw = write_table(valid, settings.raw_dir / contract.table, sort_by=contract.order_by)
            quarantine = write_table(quarantined, settings.quarantine_dir / contract.table, sort_by=contract.order_by)
        else:
            raw = write_partition(valid, settings.raw_dir / contract.table, day, sort_by=contract.order_by)
            quarantine = write_partition(quarantined, settings.quarantine_dir / contract.table, day, sort_by=contract.order_by)
        if landing_rows != raw.rows + quarantine.rows:
            raise RuntimeError(f"{contract.table}: {landing_rows} landing rows but {raw.rows} raw + {quarantine.rows} quarantined")
        # Few distinct reasons: a tiny aggregate is safe to collect.
        reasons = {row[QUARANTINE_REASON]: row["count"] for row in quarantined.groupBy(QUARANTINE_REASON).count().collect()} if quarantine.rows else {}
        return dg.MaterializeResult(metadata={
            **({"partition": day.isoformat()} if day else {}),
            "landing_rows": landing_rows,
            "dagster/row_count": raw.rows,
            "quarantined_rows": quarantine.rows,
            "quarantine_reasons": dg.MetadataValue.json(reasons),
            "path": dg.MetadataValue.path(str(raw.path)),
            "quarantine_path": dg.MetadataValue.path(str(quarantine.path)),
            "seconds": round(time.perf_counter() - started, 3),
        })

    return _asset


def raw_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    return [
        *(raw_asset(CONTRACTS[table], partitions_def) for table in RAW_PARTITIONED_TABLES),
        *(raw_asset(CONTRACTS[table], None) for table in RAW_DIMENSION_TABLES),
    ]
