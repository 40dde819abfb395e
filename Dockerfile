# The Tails sentinel: Tails, dask and supervisord in one image.
#   python sentinel.py build        (docker compose build)
#   python sentinel.py up           (docker compose up -d; --mongo adds MongoDB)
# The container runs `python sentinel.py run`: supervisord in the foreground with the programs
# of sentinel.supervisord (the dask LocalCluster and the watcher).  config.yaml is mounted at
# run time (docker-compose.yaml), so no token is baked into the image.
FROM python:3.11-slim-bookworm

# SWarp re-projects the reference onto the science frame (Debian's package installs `SWarp`).
RUN apt-get update \
    && apt-get install -y --no-install-recommends swarp \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app

# The package and its dependencies first, so that code changes elsewhere keep this layer.
COPY pyproject.toml setup.py README.md config.defaults.yaml ./
COPY tails ./tails
RUN pip install -e ".[test]"

# The sentinel, the bundled models and the tests (`python sentinel.py test` runs them here).
COPY sentinel ./sentinel
COPY sentinel.py ./
COPY models ./models
COPY tests ./tests

# Downloads, outputs, the ledger and the logs (sentinel.app.path_base = ./sentinel_data).
RUN mkdir -p /app/sentinel_data
VOLUME ["/app/sentinel_data"]

CMD ["python", "sentinel.py", "run", "--config=/app/config.yaml"]
