# The event server as a container: the old Flask backend's deployment form (python:3.14-slim),
# one process, listening on 0.0.0.0:5000 as an unprivileged user.
#   docker build -t event-server .
#   docker run -p 127.0.0.1:5000:5000 -v event-data:/data \
#     -e ENV=production -e SECRET_KEY=... -e JWT_SECRET_KEY=... \
#     -e PUBLIC_BASE_URL=https://events.example.com -e METRICS_TOKEN=... event-server
# Without MONGO_URI the data is the SQLite file on the /data volume; with MONGO_URI set,
# SQLITE_PATH is ignored (compose.yaml runs it against MongoDB).
FROM python:3.14-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The service user: no login, no home of its own, owns nothing but /data.
RUN useradd --system --user-group --uid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin event-server

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# The application, owned by root and read-only to the service; bytecode compiled now because
# the service cannot write next to the sources.
COPY . .
RUN python -m compileall -q . \
    && install -d -o event-server -g event-server -m 0750 /data /data/media

# SQLite file and locally stored photos on the volume (settings.yaml: SQLITE_PATH, MEDIA_ROOT).
# Every interface of the container: its published port reaches it only there (outside a
# container the server listens on 127.0.0.1 unless told otherwise, and production must say).
ENV SQLITE_PATH=/data/events.sqlite3 \
    MEDIA_ROOT=/data/media \
    ADDRESS=0.0.0.0
VOLUME ["/data"]

# Numeric, so that runtimes enforcing non-root (runAsNonRoot) can check it: event-server.
USER 10001:10001
EXPOSE 5000

# Healthy when /readyz answers 200 (database answering and its indexes built); 503 or no answer
# is unhealthy. No curl in the slim image: Python's urllib (an HTTP error status raises).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '5000'), timeout=4)"]

# SIGTERM (docker stop) shuts down gracefully: SHUTDOWN_GRACE_SECONDS (10) for requests in flight.
STOPSIGNAL SIGTERM
CMD ["python", "server.py"]
