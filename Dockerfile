# Application image for the web, worker and beat services in docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Copy only what the application needs (no .venv, var/ or test artifacts).
COPY pyproject.toml README.md manage.py ./
COPY config ./config
COPY sagas ./sagas
COPY orders ./orders
COPY inventory ./inventory
COPY payments ./payments
COPY shipping ./shipping

# Runtime files (the mail folder, SQLite if used) go to a writable folder.
ENV SAGAS_VAR_DIR=/tmp/sagas \
    DJANGO_STATIC_ROOT=/app/static

RUN pip install . \
    && DJANGO_SECRET_KEY=collectstatic python manage.py collectstatic --noinput \
    && useradd --create-home --uid 10001 --user-group app

USER app

EXPOSE 8000

CMD ["gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi:application"]
