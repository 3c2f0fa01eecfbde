# Tidings in a container: `docker build -t tidings .` then
#   docker run -p 6001:6001 -e TIDINGS_APPS=1:my-key:my-secret tidings
# (or mount a config: -v $PWD/tidings.toml:/etc/tidings.toml tidings --config /etc/tidings.toml).
# Installs exactly what uv.lock pins, runtime only. docs/deployment.md: "Docker".

FROM python:3.11-slim-bookworm AS build
# gcc builds the native fan-out writer and frame reader (src/tidings/_fanout.c, _wsframe.c);
# it stays in this stage.
# Debian drops superseded package versions from its mirrors, so pinning them breaks builds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY tools/uv-requirements.txt /tmp/uv-requirements.txt
RUN pip install --no-cache-dir --require-hashes --no-deps -r /tmp/uv-requirements.txt
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
ENV UV_PROJECT_ENVIRONMENT=/opt/tidings UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy
RUN uv sync --locked --no-editable --no-cache

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /var/lib/tidings --create-home tidings
COPY --from=build /opt/tidings /opt/tidings
ENV PATH=/opt/tidings/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TIDINGS_HOST=0.0.0.0 \
    TIDINGS_PORT=6001 \
    TIDINGS_WEBHOOK_QUEUE=/var/lib/tidings/webhooks.sqlite3
USER 10001
WORKDIR /var/lib/tidings
EXPOSE 6001
# SIGTERM drains (docs/deployment.md, "Stopping a node"): give it shutdown_ready_delay +
# shutdown_timeout (2 s + 10 s by default) with `docker stop -t 30` or stop_grace_period.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('TIDINGS_PORT', '6001'), timeout=2)"]
ENTRYPOINT ["tidings", "serve"]
