#!/usr/bin/env bash
# A Spark standalone cluster on this machine from the pyspark install: master + N workers.
#   infra/local/spark-standalone.sh start [workers]   then  SPARK_MASTER=spark://127.0.0.1:7077 make demo
#   infra/local/spark-standalone.sh stop
# `start` returns once the master is up and every worker has registered (or fails, showing the logs).
# Overridable (the cluster tests start their own on free ports):
#   SPARK_MASTER_PORT (7077)  SPARK_MASTER_WEBUI_PORT (8080)  SPARK_WORKER_CORES (1)
#   SPARK_WORKER_MEMORY (2g)  SPARK_STANDALONE_DIR (.state/spark: logs/, pids/, work/)
#   SPARK_STANDALONE_PYTHON (.venv/bin/python: the interpreter executors run)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${SPARK_STANDALONE_PYTHON:-$PWD/.venv/bin/python}"
SPARK_HOME="$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
BASE_DIR="${SPARK_STANDALONE_DIR:-$PWD/.state/spark}"
export SPARK_HOME SPARK_LOG_DIR="$BASE_DIR/logs" SPARK_PID_DIR="$BASE_DIR/pids" SPARK_WORKER_DIR="$BASE_DIR/work"
export PYSPARK_PYTHON="$PYTHON" SPARK_LOCAL_IP=127.0.0.1 SPARK_DAEMON_MEMORY="${SPARK_DAEMON_MEMORY:-512m}"
PORT="${SPARK_MASTER_PORT:-7077}"
MASTER_URL="spark://127.0.0.1:$PORT"
WORKERS="${2:-2}"

wait_for() {  # wait_for <file> <pattern> <count> <what>
  for _ in $(seq 1 120); do
    if [ "$(grep -c "$2" "$1" 2>/dev/null || true)" -ge "$3" ]; then return 0; fi
    sleep 0.5
  done
  echo "timed out waiting for $4; logs in $SPARK_LOG_DIR:" >&2
  tail -n 30 "$SPARK_LOG_DIR"/*.log >&2 || true
  exit 1
}

case "${1:-start}" in
  start)
    mkdir -p "$SPARK_LOG_DIR" "$SPARK_PID_DIR" "$SPARK_WORKER_DIR"
    "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$PORT" \
      --webui-port "${SPARK_MASTER_WEBUI_PORT:-8080}" >"$SPARK_LOG_DIR/master.log" 2>&1 &
    echo $! >"$SPARK_PID_DIR/master.pid"
    wait_for "$SPARK_LOG_DIR/master.log" "I have been elected leader" 1 "the master"
    for i in $(seq 1 "$WORKERS"); do
      "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 \
        --cores "${SPARK_WORKER_CORES:-1}" --memory "${SPARK_WORKER_MEMORY:-2g}" --webui-port 0 \
        --work-dir "$SPARK_WORKER_DIR" "$MASTER_URL" >"$SPARK_LOG_DIR/worker-$i.log" 2>&1 &
      echo $! >"$SPARK_PID_DIR/worker-$i.pid"
    done
    wait_for "$SPARK_LOG_DIR/master.log" "Registering worker" "$WORKERS" "$WORKERS worker(s) to register"
    echo "Spark master at $MASTER_URL with $WORKERS worker(s); export SPARK_MASTER=$MASTER_URL"
    ;;
  stop)
    for pid_file in "$SPARK_PID_DIR"/*.pid; do
      [ -e "$pid_file" ] || continue
      kill "$(cat "$pid_file")" 2>/dev/null || true
      rm -f "$pid_file"
    done
    ;;
  *) echo "usage: $0 start [workers] | stop" >&2; exit 2 ;;
esac
