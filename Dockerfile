# CTA's images, one multi-stage file. Build them with `make images` (deploy/images.py), which first builds every
# wheel on the host (`pip wheel`, from the host's index and pip cache) and hands them to this build as the image
# ${WHEELS} (a plain filesystem image of the wheel files): nothing in here reaches a package index.
#
#   runtime  the product without the heavy ML stack: `cta serve` (the trading worker), `cta exchange serve`,
#            `mlflow server ...`, `prefect server start` (mlflow and prefect are core dependencies).
#   flows    runtime + the `ml` extra (tensorflow-cpu, torch CPU, ray[rllib], backtrader): the Prefect worker
#            that runs ingestion, training and backtests; also the trading worker when the champion is a
#            keras or ppo model (those need TensorFlow / torch to predict).
#
# BASE must be a Debian bookworm image with Python 3.11 as `python3`: python:3.11-slim-bookworm (what users pull)
# or the debootstrap image the tests build offline (cta/base:bookworm). Both get the same venv at /opt/venv.
ARG BASE=python:3.11-slim-bookworm
ARG WHEELS=cta/wheels:local

# ---------------------------------------------------------------------------------------------------------------
# The wheel files (built on the host): /wheels/*.whl, /wheels/requirements-runtime.txt, /wheels/requirements-ml.txt
# checkov:skip=CKV_DOCKER_7: not a base image but the wheels, imported locally as cta/wheels:<hash of pyproject.toml>
FROM ${WHEELS} AS wheels

# The runtime dependencies in a venv. Its layer depends only on the wheels, not on the source.
FROM ${BASE} AS deps
ENV PIP_NO_INDEX=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=wheels /wheels /wheels
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --no-cache-dir --find-links /wheels -r /wheels/requirements-runtime.txt

# ... plus the ML extra (its own layer, reused while the wheels do not change).
FROM deps AS deps-ml
RUN /opt/venv/bin/pip install --no-index --no-cache-dir --find-links /wheels -r /wheels/requirements-ml.txt

# The product as a wheel. The images install it over the dependencies' venv in a small layer of its own, so a source
# change rebuilds only that layer, never the venv's (1.5 GB, 4 GB with the ML extra).
FROM deps AS project
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY cta ./cta
COPY flows ./flows
COPY features ./features
COPY training ./training
COPY backtests ./backtests
COPY serving ./serving
COPY benchmarks ./benchmarks
RUN /opt/venv/bin/pip wheel --no-index --no-cache-dir --find-links /wheels --no-deps --wheel-dir /dist .

# ---------------------------------------------------------------------------------------------------------------
FROM ${BASE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CTA_CONFIG_DIR=/app/config \
    PREFECT_HOME=/app/data/prefect \
    MPLCONFIGDIR=/app/data/matplotlib \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    DO_NOT_TRACK=true \
    GX_ANALYTICS_ENABLED=false \
    GIT_PYTHON_REFRESH=quiet \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    HEALTHCHECK_URL=http://127.0.0.1:8780/healthz
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/cta --shell /usr/sbin/nologin cta \
    && mkdir -p /app/data /app/logs \
    && chown -R cta:cta /app
COPY --from=deps /opt/venv /opt/venv
COPY --from=project /dist /tmp/dist
# The install and its import check run as root with the library homes in /tmp: nothing root-owned lands in /app/data.
RUN /opt/venv/bin/pip install --no-index --no-cache-dir --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && PREFECT_HOME=/tmp/check MPLCONFIGDIR=/tmp/check /opt/venv/bin/python -c "import app.cli, serving, flows.ingest" \
    && rm -rf /tmp/check
COPY config /app/config
COPY deploy/healthcheck.py /opt/cta/healthcheck.py
# The dashboard's built files (`make dashboard` before the build; `make images` does), served by the worker's API at /.
COPY dashboard/dist /app/dashboard/dist
ENV CTA_SERVING__DASHBOARD_DIR=/app/dashboard/dist
WORKDIR /app
USER 10001:10001
# What the container serves decides what healthy means: compose sets HEALTHCHECK_URL (or its own healthcheck)
# per service; by default the trading worker's open /healthz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 CMD ["/opt/venv/bin/python", "/opt/cta/healthcheck.py"]
EXPOSE 8780
CMD ["cta", "--help"]

# ---------------------------------------------------------------------------------------------------------------
FROM ${BASE} AS flows
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CTA_CONFIG_DIR=/app/config \
    PREFECT_HOME=/app/data/prefect \
    MPLCONFIGDIR=/app/data/matplotlib \
    KERAS_HOME=/app/data/keras \
    TORCHINDUCTOR_CACHE_DIR=/app/data/torchinductor \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    DO_NOT_TRACK=true \
    GX_ANALYTICS_ENABLED=false \
    GIT_PYTHON_REFRESH=quiet \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    RAY_USAGE_STATS_ENABLED=0 \
    RAY_AUTH_MODE=disabled \
    RLLIB_TEST_NO_TF_IMPORT=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    TF_ENABLE_ONEDNN_OPTS=0 \
    HEALTHCHECK_URL=http://127.0.0.1:8080/health
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/cta --shell /usr/sbin/nologin cta \
    && mkdir -p /app/data /app/logs \
    && chown -R cta:cta /app
COPY --from=deps-ml /opt/venv /opt/venv
COPY --from=project /dist /tmp/dist
RUN /opt/venv/bin/pip install --no-index --no-cache-dir --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && PREFECT_HOME=/tmp/check MPLCONFIGDIR=/tmp/check KERAS_HOME=/tmp/check TORCHINDUCTOR_CACHE_DIR=/tmp/check \
       /opt/venv/bin/python -c "import app.cli, serving, flows.learn, backtests.bt_engine, torch, tensorflow, ray, prefect_kubernetes" \
    && rm -rf /tmp/check
COPY config /app/config
COPY deploy/healthcheck.py /opt/cta/healthcheck.py
WORKDIR /app
USER 10001:10001
# The Prefect worker's own health endpoint (`prefect worker start --with-healthcheck`, port 8080).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 CMD ["/opt/venv/bin/python", "/opt/cta/healthcheck.py"]
CMD ["prefect", "worker", "start", "--pool", "cta", "--type", "process", "--with-healthcheck"]
