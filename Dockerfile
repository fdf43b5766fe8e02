# syntax=docker/dockerfile:1
# replicator image: a venv with the package and its dependencies on python:3.11-slim, run as a non-root user.
#   docker build -t replicator .
#   docker run -v ./replicator.toml:/etc/replicator/replicator.toml:ro -p 9100:9100 replicator
# Needs BuildKit (the default builder since Docker 23) for the bind mount below.

# --- build: the project's wheel plus wheels of every dependency -------------------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY replicator ./replicator
RUN pip wheel --wheel-dir /wheels .

# --- runtime: no compiler, no pip, no pip cache -----------------------------------------------------------
FROM python:3.11-slim
LABEL org.opencontainers.image.title="replicator" \
      org.opencontainers.image.description="Change-data-capture daemon: DMS files or PostgreSQL to Redshift, PostgreSQL, DuckDB" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The venv is made without pip; the base image's pip installs into it from the wheels of the build stage,
# offline, so the image holds exactly what was built there.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-cache-dir --no-index --find-links=/wheels replicator \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/replicator \
       --shell /usr/sbin/nologin replicator \
    && mkdir -p /etc/replicator

# Local staging, DuckDB files and quarantine (when configured under it) go to the working directory:
# mount a volume here to keep them across restarts.
WORKDIR /var/lib/replicator
USER 10001:10001

# Prometheus metrics, /healthz and the admin API.
EXPOSE 9100
# slim has no curl; urlopen raises (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=4)"]

# replicator runs as PID 1 and handles SIGTERM itself (drain, then exit); ECS sends SIGTERM on stop.
ENTRYPOINT ["replicator"]
CMD ["run", "-c", "/etc/replicator/replicator.toml"]
