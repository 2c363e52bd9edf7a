#!/usr/bin/env bash
# A Spark standalone cluster on this machine from the pyspark install: master + N workers.
#   infra/local/spark-standalone.sh start [workers]   then  SPARK_MASTER=spark://127.0.0.1:7077 make demo
#   infra/local/spark-standalone.sh stop
set -euo pipefail
cd "$(dirname "$0")/../.."
SPARK_HOME="$(.venv/bin/python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
export SPARK_HOME SPARK_LOG_DIR="$PWD/.state/spark/logs" SPARK_PID_DIR="$PWD/.state/spark/pids"
export PYSPARK_PYTHON="$PWD/.venv/bin/python" SPARK_LOCAL_IP=127.0.0.1
MASTER_URL="spark://127.0.0.1:${SPARK_MASTER_PORT:-7077}"
case "${1:-start}" in
  start)
    mkdir -p "$SPARK_LOG_DIR" "$SPARK_PID_DIR"
    "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "${SPARK_MASTER_PORT:-7077}" --webui-port 8080 \
      >"$SPARK_LOG_DIR/master.log" 2>&1 & echo $! >"$SPARK_PID_DIR/master.pid"
    for i in $(seq 1 "${2:-2}"); do
      "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --cores 1 --memory 2g "$MASTER_URL" \
        >"$SPARK_LOG_DIR/worker-$i.log" 2>&1 & echo $! >"$SPARK_PID_DIR/worker-$i.pid"
    done
    echo "Spark master at $MASTER_URL (UI http://127.0.0.1:8080); export SPARK_MASTER=$MASTER_URL"
    ;;
  stop)
    for pid_file in "$SPARK_PID_DIR"/*.pid; do kill "$(cat "$pid_file")" 2>/dev/null || true; rm -f "$pid_file"; done
    ;;
  *) echo "usage: $0 start [workers] | stop" >&2; exit 2 ;;
esac
