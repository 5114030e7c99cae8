# The bridge alone; docker-compose.yml runs it next to mosquitto. Build: docker build -t amego-bridge .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
# libcap2-bin only for setcap: active ARP requests need CAP_NET_RAW, and Docker hands added
# capabilities to a non-root user only through file capabilities. The interpreter that runs the
# bridge is a copy of its own, so no other process here gets the capability.
RUN pip install . \
    && apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin \
    && cp /usr/local/bin/python3.11 /usr/local/bin/amego-python \
    && setcap cap_net_raw+ep /usr/local/bin/amego-python \
    && apt-get purge -y libcap2-bin \
    && rm -rf /var/lib/apt/lists/* /src \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin amego \
    && mkdir -p /config /data \
    && chown amego:amego /data

# /config holds config.toml (optional: without it the bridge runs on defaults); /data the call
# log and learned devices. Everything else stays read-only.
WORKDIR /config
ENV AMEGO_STORAGE_DIR=/data \
    HOME=/tmp
USER amego
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["amego-python", "-m", "bridge"]
CMD ["run"]
