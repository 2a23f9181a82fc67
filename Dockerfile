# The consumers (and every tcx-bridge command) in a container; the notify executable
# and the desk agent run on the agents' Windows desks instead.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY consumers ./consumers
RUN pip install --no-cache-dir ".[metrics,xlsx,postgres]" \
    && useradd --system --uid 10001 tcx \
    && mkdir /data && chown tcx /data
USER tcx
ENV TCX_BRIDGE_DATA_DIR=/data TCX_BRIDGE_METRICS_PORT=9464 TCX_BRIDGE_METRICS_HOST=0.0.0.0
EXPOSE 9464
ENTRYPOINT ["tcx-bridge"]
CMD ["--help"]
