# sts-agent container image.
#   docker build -t sts-agent:0.1.0 .
#   docker run --rm -p 9472:9472 --read-only sts-agent:0.1.0
# The builder stage installs the agent and its wheels into a virtualenv; the
# final stage copies only that virtualenv onto the same slim Python base, so
# no compiler, pip cache or source tree ends up in the image.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY agent ./agent
# pip compiles every module to bytecode here, so the read-only runtime never
# needs to write a .pyc.
RUN python -m venv /opt/sts-agent \
 && /opt/sts-agent/bin/pip install -c constraints.txt . \
 && /opt/sts-agent/bin/python -m compileall -q /opt/sts-agent/lib \
 && /opt/sts-agent/bin/pip uninstall -y pip

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="sts-agent" \
      org.opencontainers.image.description="Watches which network path AWS STS traffic takes and exports it to Prometheus" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
ENV PATH=/opt/sts-agent/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=builder /opt/sts-agent /opt/sts-agent
USER 65532:65532
EXPOSE 9472
# slim has no curl: ask /-/healthy with the standard library, on the port the
# agent was told to listen on.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request as u; p=os.environ.get('STS_AGENT_WEB_LISTEN_ADDRESS',':9472').rpartition(':')[2]; u.urlopen('http://127.0.0.1:'+p+'/-/healthy', timeout=4)"]
ENTRYPOINT ["sts-agent"]
CMD ["serve"]
