# Depot image: the app and the worker run from the same image (compose.yaml picks the command).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends gpg rpm xz-utils \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --home /srv/depot --create-home depot
WORKDIR /srv/depot/app
COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
COPY sql ./sql
RUN pip install --no-cache-dir .
USER depot
ENV DEPOT_HOST=0.0.0.0 \
    DEPOT_STORAGE_DIR=/srv/depot/storage \
    DEPOT_VAR_DIR=/srv/depot/var
EXPOSE 8080
CMD ["depot", "serve"]
