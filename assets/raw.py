"""Raw assets: landing zone -> contract-checked raw tables, bad rows to quarantine."""

import logging
import re
import time

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from assets.partitions import partition_date
from assets.resources import PlatformResource
from core.lake import RAW_DIMENSION_TABLES, RAW_PARTITIONED_TABLES, partition_dir
from pipelines.offline_store import write_partition, write_table
from pipelines.contracts import Contract
from pipelines.raw import CONTRACTS, QUARANTINE_REASON, UnreadableLandingFileError, read_landing, split_valid_and_quarantined

log = logging.getLogger(__name__)


def _spark_read_failure(where: str, error: Exception) -> UnreadableLandingFileError:
    """A landing file Spark cannot decode (its footer was fine): the user sees table, partition, file
    and the innermost cause in one line; the JVM trace goes to the log only."""
    log.error("%s: Spark could not read the landing data", where, exc_info=error)
    text = str(error)
    file = re.search(r"file:/*(\S+?\.parquet)", text)
    causes = re.findall(r"Caused by: (?:[\w$]+\.)*(\w+): ([^\n]*)", text)
    error_class = re.search(r"\[([A-Z][A-Z_.]+)\]", text)
    detail = f"{causes[-1][0]}: {causes[-1][1][:200]}" if causes else (error_class.group(1) if error_class else type(error).__name__)
    named = f"landing file {file.group(1).rsplit('/', 1)[-1]}" if file else "a landing file"
    return UnreadableLandingFileError(f"{where}: {named} is unreadable: {detail} (the Spark trace is in the run log)")


def raw_asset(contract: Contract, partitions_def: dg.PartitionsDefinition | None) -> dg.AssetsDefinition:
    """Daily-partitioned when `partitions_def` is given (facts), else one snapshot (dimensions)."""
    kind = "One day of" if partitions_def else "The snapshot of"
    # Referential rules read the referenced raw table: the dimension snapshot, or the same day's partition.
    referenced = sorted({rule.table for rule in contract.references})

    @dg.asset(
        key=["raw", contract.table],
        partitions_def=partitions_def,
        group_name="raw",
        kinds={"spark", "parquet"},
        deps=[dg.AssetKey(["raw", table]) for table in referenced],
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
        spark = pyspark.spark_session
        partition = day.isoformat() if day else "snapshot"
        references = {}
        for table in referenced:
            path = settings.raw_dir / table
            if table in RAW_PARTITIONED_TABLES:
                path = path / f"date={partition}"
            if not path.exists():
                raise FileNotFoundError(f"{contract.table}[{partition}]: its contract checks against raw/{table}, which has no data at {path}")
            references[table] = spark.read.parquet(str(path))
        landing = read_landing(spark, contract, landing_path, partition)  # every file checked on its own first
        try:
            landing_rows = landing.count()
            valid, quarantined = split_valid_and_quarantined(landing, contract, day, references)
            if day is None:
                raw = write_table(valid, settings.raw_dir / contract.table, sort_by=contract.order_by)
                quarantine = write_table(quarantined, settings.quarantine_dir / contract.table, sort_by=contract.order_by)
            else:
                raw = write_partition(valid, settings.raw_dir / contract.table, day, sort_by=contract.order_by)
                quarantine = write_partition(quarantined, settings.quarantine_dir / contract.table, day, sort_by=contract.order_by)
        except Exception as error:  # noqa: BLE001 (Py4J and Spark errors share no base worth naming)
            if str(landing_path) in str(error):  # Spark failed decoding a landing file its footer announced
                raise _spark_read_failure(f"{contract.table}[{partition}]", error) from None
            raise
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
