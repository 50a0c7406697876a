# PlexSync's Plex metadata provider (provider.py): see docs/provider.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt requirements-provider.txt ./
RUN pip install --no-compile -r requirements.txt -r requirements-provider.txt \
 && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin plexsync \
 && mkdir -p /app/data && chown plexsync /app/data

COPY provider.py ./
COPY lib ./lib

USER 10001
ENV PLEXSYNC_PORT=8000 \
    PLEXSYNC_DATA_DIR=/app/data
VOLUME ["/app/data"]
EXPOSE 8000

# Liveness of the provider itself: /health answers 200 even while Stash or Plex is down (its body says so).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PLEXSYNC_PORT', '8000'), timeout=4)"]

# Exec form: python is PID 1 and gets SIGTERM; provider.py stops Waitress cleanly on it.
STOPSIGNAL SIGTERM
CMD ["python", "provider.py"]
