# One image for the Dagster code location, Dagster webserver/daemon/run pods, Spark driver/executors
# and the GPU serving endpoint (infra/k8s/). Build:  docker build -t ghcr.io/example/featurestack:0.1.0 .
# CPU-only image:  docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu ...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ENV UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN pip install --no-cache-dir uv==0.13.8 && python -m venv /app/.venv
# Dependencies first (cached while only code changes): the pinned lock, then torch, then the k8s extras.
COPY requirements.lock pyproject.toml README.md ./
RUN uv pip sync --python /app/.venv/bin/python --no-cache requirements.lock \
 && uv pip install --python /app/.venv/bin/python --no-cache --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && uv pip install --python /app/.venv/bin/python --no-cache dagster-k8s==0.29.27 dagster-postgres==0.29.27
COPY core core
COPY onlinestore onlinestore
COPY featurestack featurestack
COPY pipelines pipelines
COPY assets assets
COPY serving serving
COPY eventlog eventlog
COPY streaming streaming
COPY monitoring monitoring
COPY validations validations
COPY catalog catalog
COPY training training
COPY feature_repo feature_repo
COPY workspace.yaml ./
RUN uv pip install --python /app/.venv/bin/python --no-cache --no-deps -e . \
 && /app/.venv/bin/python -m compileall -q core onlinestore featurestack pipelines assets serving validations catalog training monitoring

FROM ${PYTHON_IMAGE}
# Java 17 for Spark (driver here; executors run this same image on Kubernetes).
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 featurestack \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin featurestack
COPY --from=build --chown=root:root /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYSPARK_PYTHON=/app/.venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/app/.venv/bin/python \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    FEATURESTACK_STATE_DIR=/var/lib/featurestack/state \
    DAGSTER_HOME=/opt/dagster/home
WORKDIR /app
# Code is root-owned and read-only to the runtime user; state lives on mounted volumes.
USER 10001:10001
EXPOSE 8000 3000 4000
ENTRYPOINT ["tini", "--"]
CMD ["featurestack", "serve", "--host", "0.0.0.0", "--port", "8000"]
