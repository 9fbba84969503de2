# One image for every Eddy service: the command picks the role
# (`run ingest`, `run serving`, `topics create`, `models publish`, ...).
# Production talks to real Kafka and Redis servers, so the `embedded` extra is not installed.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A virtualenv, so the runtime stage copies one directory and nothing of the build tools.
RUN python -m venv /opt/eddy
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services/ services/
COPY schemas/ schemas/
COPY eddy/ eddy/
# The wheel force-includes infra/ as services/core/_infra (topics, feature schemas).
COPY infra/ infra/
RUN /opt/eddy/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/eddy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EDDY_REGISTRY_DIR=/var/lib/eddy/registry
# The registry directory exists in the image, owned by the service user, so a fresh named
# volume mounted there inherits that ownership and the non-root process can write to it.
RUN groupadd --system --gid 10001 eddy \
    && useradd --system --uid 10001 --gid eddy --home-dir /var/lib/eddy \
        --shell /usr/sbin/nologin eddy \
    && mkdir -p /var/lib/eddy/registry \
    && chown -R eddy:eddy /var/lib/eddy
COPY --from=build /opt/eddy /opt/eddy
USER eddy
WORKDIR /var/lib/eddy
# Prometheus metrics, when EDDY_METRICS_PORT=9100 (as docker-compose.yml sets it).
EXPOSE 9100
ENTRYPOINT ["eddy"]
CMD ["--help"]
