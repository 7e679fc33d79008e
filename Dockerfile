# gpumetrics: the GPU metrics service under gunicorn, SQLite in the /data volume by default.
#
# /data   the database (metrics.db), its journal (-wal, -shm) and the lock files beside it:
#         metrics.db.write.lock (writers queue on it), metrics.db.tail.lock and
#         metrics.db.retention.lock (which process runs each job). Writable by uid 10001.
# /input  the crawler's JSONL files, when tailed (ENABLE_WS_FILE, ENABLE_MSG_FILE); the
#         service only reads them, so the crawler's folder can be mounted read-only here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATABASE_URL=sqlite:////data/metrics.db \
    INPUT_WS_PATH=/input/ws_out.jsonl \
    INPUT_MSG_PATH=/input/msg_out.jsonl

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY config.py wsgi.py ./
COPY gpumetrics ./gpumetrics
# A named volume on /data starts as the image's /data, owned by this user; a bind mount
# the user cannot write stops the start with one line naming the folder and uid 10001.
RUN groupadd --system --gid 10001 gpumetrics \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app gpumetrics \
    && mkdir /data /input && chown 10001:10001 /data
USER 10001:10001
VOLUME /data
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD python -c "import os, urllib.request; h = os.environ.get('HOST', '0.0.0.0'); h = {'0.0.0.0': '127.0.0.1', '::': '::1'}.get(h, h); h = '[%s]' % h if ':' in h else h; urllib.request.urlopen('http://%s:%s/health' % (h, os.environ.get('PORT', '8080')), timeout=4)"

# gunicorn stops gracefully on SIGTERM: in-flight requests get graceful_timeout (8 s, in
# gpumetrics/gunicorn_conf.py) to finish, inside the 10 s `docker stop` waits before SIGKILL.
STOPSIGNAL SIGTERM
CMD ["gunicorn", "--config", "python:gpumetrics.gunicorn_conf", "wsgi:app"]
