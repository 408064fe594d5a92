# syntax=docker/dockerfile:1
# The voice agent as a container image: docker build -t vobiz-voice-agent .
# How to run it on one host, as several processes, on Kubernetes: docs/deploy.md.

# Python 3.11: the version the tests run on, and one pocketsphinx publishes wheels for
# (it has none for 3.12). Every dependency comes as a wheel: the slim image needs no compiler.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# uv, pinned to the release that keeps uv.lock.
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3.11
WORKDIR /app
# The dependencies alone, exactly as locked: this layer is rebuilt only when uv.lock changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
# Then the project, into the same environment; not editable, so the environment alone is
# the application and the final image needs neither the sources nor uv.
COPY README.md ./
COPY engine ./engine
COPY adapters ./adapters
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE}
RUN useradd --system --user-group --uid 10001 --create-home --home-dir /home/agent agent \
    && mkdir -p /data/calls \
    && chown agent:agent /data/calls
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    CALL_LOG_DIR=/data/calls \
    LOG_FORMAT=json
USER agent
WORKDIR /home/agent
VOLUME /data/calls
EXPOSE 8000
# voice-agent serve drains on SIGTERM: no new calls, live ones get DRAIN_TIMEOUT. Give the
# container longer than that to stop (docker stop -t, compose's stop_grace_period).
STOPSIGNAL SIGTERM
# /health answers 503 while draining or full, so a draining container reads as unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=2)"]
CMD ["voice-agent", "serve"]
