# syntax=docker/dockerfile:1
# replicator image: a venv with the package and its locked dependencies on python:3.11-slim, run as a
# non-root user, configured by /etc/replicator/replicator.toml (deploy/replicator.toml) plus
# REPLICATOR__SECTION__KEY environment variables, with the table definitions of schemas/ baked in.
#   docker build -t replicator .
#   docker run -e REPLICATOR__SOURCE__PATH=s3://... -e REPLICATOR__STAGING__PATH=s3://... -p 9100:9100 replicator
# Needs BuildKit (the default builder since Docker 23) for the bind mount below.
# tests/ops/test_image_entrypoint.py runs this file's ENTRYPOINT, CMD and HEALTHCHECK from a plain venv.

# --- build: wheels of the locked dependencies (hash-checked) and of the project -------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first: this layer is rebuilt only when requirements.lock changes. Every file's hash is
# checked against the lock (pip's hash-checking mode), so the image holds exactly the reviewed releases.
COPY requirements.lock ./
RUN pip wheel --wheel-dir /wheels --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY replicator ./replicator
# A C compiler for the optional compiled row scanner (issue 16), in this stage only: the runtime gets the wheel.
# Not pinned: the compiler of the base image's Debian release builds it, and nothing of it reaches the image.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime: no compiler, no pip in the venv, no pip cache -----------------------------------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="replicator" \
      org.opencontainers.image.description="Change-data-capture daemon: DMS files or PostgreSQL to Redshift, PostgreSQL, DuckDB" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The venv is made without pip; the base image's pip installs into it from the build stage's wheels,
# offline (--no-index), so every dependency resolves to the one locked release that was built there.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-cache-dir --no-index --find-links=/wheels replicator \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/replicator \
       --shell /usr/sbin/nologin replicator

# Read-only for the daemon (owned by root): the base config and the table definitions it names.
COPY deploy/replicator.toml /etc/replicator/replicator.toml
COPY schemas /etc/replicator/schemas

# Local staging, DuckDB files and quarantine (when configured under it) go to the working directory:
# mount a volume here (the ECS task does) so the root filesystem can stay read-only.
WORKDIR /var/lib/replicator
USER 10001:10001

# Prometheus metrics, /healthz, /readyz and the admin API ([http] port).
EXPOSE 9100
# slim has no curl; urlopen raises (exit 1) on a refused connection or a non-2xx answer. The ECS task
# definition repeats this command (ECS ignores an image's HEALTHCHECK); a test keeps the two identical.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=4)"]

# replicator runs as PID 1 and handles SIGTERM itself (drain, then exit 0 within
# pipeline.shutdown_grace_seconds); ECS sends SIGTERM on stop and SIGKILL after the task's stopTimeout.
ENTRYPOINT ["replicator"]
CMD ["run", "-c", "/etc/replicator/replicator.toml"]
