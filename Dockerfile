# gpumetrics: the GPU metrics service under gunicorn, SQLite in the /data volume by default.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8080 \
    DATABASE_URL=sqlite:////data/metrics.db

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY config.py wsgi.py ./
COPY gpumetrics ./gpumetrics
RUN useradd --system --uid 10001 --home-dir /app gpumetrics \
    && mkdir /data && chown gpumetrics /data
USER gpumetrics
VOLUME /data
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=4)"

CMD ["gunicorn", "--config", "python:gpumetrics.gunicorn_conf", "wsgi:app"]
