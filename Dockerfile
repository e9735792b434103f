# syntax=docker/dockerfile:1
# synthbrew-exporter: build from uv.lock in one stage, run slim and unprivileged in the next.

FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY scripts/install.sh scripts/install.sh
COPY exporter exporter
COPY queries queries
RUN sh scripts/install.sh /opt/venv

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin synthbrew \
    && mkdir -p /data /etc/synthbrew-exporter \
    && chown synthbrew /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER synthbrew
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9794
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9794/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["synthbrew-exporter"]
CMD ["run", "--config", "/etc/synthbrew-exporter/config.yaml"]
