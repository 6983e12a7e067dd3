# The chat service as a container: `python -m chat serve` on 0.0.0.0:8000, as a non-root user,
# by default with its SQLite file on the /data volume (one container). docker-compose.yml runs
# two of these behind nginx with no volume, sharing events through Redis (CHAT_BROKER) and the
# data through PostgreSQL (CHAT_DATABASE=postgresql://...).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The code finds migrations/ and static/ next to the chat/ package (chat/config.py
# MIGRATIONS_DIR, chat/api/ops.py STATIC_DIR), so the source tree stays in /app and is
# installed in editable mode: the package is imported from /app/chat, not copied away.
# The packages come from requirements.lock alone: exact versions, every file checked against
# its hash (scripts/lock regenerates it). That layer is cached until the lock changes.
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY chat ./chat
COPY migrations ./migrations
COPY static ./static
COPY deploy/bot.py ./deploy/bot.py
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e . \
    && pip check \
    && groupadd --system --gid 10001 chat \
    && useradd --system --uid 10001 --gid chat --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin chat \
    && mkdir -p /data \
    && chown chat:chat /data

# A named volume mounted here starts as a copy of this directory, owned by the chat user.
ENV CHAT_DATABASE=/data/chat.db
# The CMD serves on 0.0.0.0, where `serve` refuses to start unless CHAT_AUTH is set. `open`
# keeps the service as it was (guests read public rooms and post under any name). The operator
# should choose: `docker run -e CHAT_AUTH=required ...` makes every request sign in (accounts:
# `python -m chat users add`, tokens: `python -m chat tokens create`).
ENV CHAT_AUTH=open
VOLUME ["/data"]

USER chat
EXPOSE 8000

# Liveness: slim images have no curl, so Python's urllib asks /healthz (any non-2xx raises).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

# SIGTERM (docker stop) ends every stream and exits within CHAT_SHUTDOWN_GRACE_SECONDS.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "chat", "serve", "--host", "0.0.0.0", "--port", "8000"]
