FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY processor processor
COPY router router
COPY transformers transformers
COPY config config
COPY jobsdb jobsdb
COPY ops ops
RUN pip install --no-cache-dir . && useradd --system sluice
USER sluice
ENTRYPOINT []
