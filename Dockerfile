# cnn-serve: the inference service with the committed model baked in.
# Build stage: install the runtime dependencies into a virtual environment.
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
# Exact versions with hashes (`make lock` refreshes them), then the project without resolving.
COPY requirements.lock requirements-no-deps.lock ./
# tensorflow-serving-api (TensorFlow Serving's gRPC messages) asks for the full tensorflow
# package; tensorflow-cpu, from the lock, provides it, so it is installed without dependencies.
RUN pip install --require-hashes -r requirements.lock \
    && pip install --no-deps --require-hashes -r requirements-no-deps.lock
COPY pyproject.toml README.md ./
COPY app ./app
COPY model/*.py ./model/
COPY cnn_serve ./cnn_serve
RUN pip install --no-deps .

# Final stage: the virtual environment, the service's source and the model; no build tools.
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CNN_SERVE_HOST=0.0.0.0 \
    CNN_SERVE_PORT=8000 \
    CNN_SERVE_GRPC_PORT=8500 \
    CNN_SERVE_MODEL_BASE_DIR=/srv/model \
    CNN_SERVE_COMPILE_CACHE_DIR=/srv/cache
COPY --from=builder /opt/venv /opt/venv
WORKDIR /srv
COPY app ./app
COPY model/export ./model
RUN install -d -m 700 -o 10001 -g 10001 /srv/cache

USER 10001:10001
# Load the committed model once now (its checked int8 weights; a version without them is compiled
# to LiteRT into the cache), so the container starts without TensorFlow.
RUN python -c "from app.config import Settings; from app.models import load_model, resolve_version_dir; \
s = Settings(); load_model(resolve_version_dir(s.model_dir), s)"
EXPOSE 8000 8500
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "app.healthcheck"]
CMD ["python", "-m", "app"]
