# One image for every role: `--role all|api|worker`, and the shared simulated chain
# (`python -m order_engine.chain`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir order_engine && touch order_engine/__init__.py \
    && pip install . \
    && pip uninstall -y order-engine \
    && rm -rf order_engine build

COPY order_engine ./order_engine
RUN pip install --no-deps . && rm -rf build

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin engine \
    && mkdir -p /app/data && chown engine /app/data
USER engine

# Listen on every interface inside the container; the port is the engine's default.
ENV HOST=0.0.0.0 \
    PORT=3000
EXPOSE 3000

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=2)" || exit 1

ENTRYPOINT ["python", "-m", "order_engine"]
CMD ["--role", "all"]
