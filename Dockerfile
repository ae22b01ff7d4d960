# One image for every ledger process; compose.yaml picks the verb.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ledger ./ledger
COPY projections ./projections
COPY consumers ./consumers
COPY ledger_app ./ledger_app
COPY ledger_kernel ./ledger_kernel
RUN pip install --no-cache-dir . && useradd --system --uid 10001 ledger
USER ledger
ENTRYPOINT ["ledger"]
CMD ["--help"]
