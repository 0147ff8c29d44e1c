# One image for every CertHub process: web, worker, beat, dns (pick with the command).
# Build stage: compile wheels (mysqlclient needs the MariaDB headers).
FROM python:3.12-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libmariadb-dev \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /tmp/requirements.txt
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r /tmp/requirements.txt

# Runtime stage: only the shared library, the wheels and the code.
FROM python:3.12-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmariadb3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /app --uid 1000 certhub
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
WORKDIR /app
COPY --chown=certhub:certhub . /app
# collectstatic needs settings that load; these values exist only for this build step.
RUN SECRET_KEY=build-only CERTHUB_ENCRYPTION_KEYS=YnVpbGQtb25seS1rZXktMzItYnl0ZXMtbG9uZyEhISE= \
    CERTHUB_DATA_DIR=/app/var python manage.py collectstatic --noinput \
 && mkdir -p /app/var && chown -R certhub:certhub /app/var
USER certhub
ENV PYTHONUNBUFFERED=1 CERTHUB_DNS_LISTEN=0.0.0.0:5353 CERTHUB_WEB_LISTEN=0.0.0.0:8000
EXPOSE 8000 5353/udp 5353/tcp
# web (default); override the command for the others:
#   celery -A certhub worker | celery -A certhub beat | python manage.py run_dns
CMD ["sh", "-c", "gunicorn certhub.wsgi --bind ${CERTHUB_WEB_LISTEN} --workers ${WEB_CONCURRENCY:-2} --access-logfile -"]
