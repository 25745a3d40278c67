# syntax=docker/dockerfile:1
# The promptloop operator image: `promptloop operator` (the default command), and the same CLI
# for the improver CronJob (`promptloop improve ...`).
#   docker build -t ghcr.io/promptloop/operator:0.1.0 .
# Two stages so that build tools and pip caches never reach the runtime image.

FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The package's metadata first: the dependency layer is reused until pyproject.toml changes.
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/promptloop \
 && /opt/promptloop/bin/pip install --upgrade pip \
 && /opt/promptloop/bin/pip install .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="promptloop" \
      org.opencontainers.image.description="Canaries LLM agent prompt revisions behind evidence and a human gate" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric user (the chart and manifests set runAsUser 65532), so that runAsNonRoot can
# be verified by the kubelet without resolving names.
RUN groupadd --system --gid 65532 promptloop \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin promptloop
COPY --from=build /opt/promptloop /opt/promptloop
# The root filesystem is read-only in the cluster: no bytecode caches, unbuffered logs.
ENV PATH=/opt/promptloop/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["promptloop"]
CMD ["operator"]
