# medunlearn pipeline image. CPU torch by default; for CUDA pass the matching wheel index:
#   docker build -t medunlearn .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 -t medunlearn:cuda .
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DVC_NO_ANALYTICS=1 \
    ORT_DISABLE_TELEMETRY=1 \
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90

# git: DVC versions data inside a git repository; make: the README's commands.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# torch first, from the chosen index (CPU or CUDA build of the pinned 2.13.0).
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0"

COPY pyproject.toml constraints.txt README.md ./
COPY medunlearn ./medunlearn
COPY tasks ./tasks
COPY flows ./flows
COPY cli ./cli
RUN grep -v '^torch==' constraints.txt > /tmp/constraints.txt \
    && pip install -c /tmp/constraints.txt .

COPY params.yaml dvc.yaml data.dvc .dvcignore ./
COPY requests ./requests
COPY .dvc/config .dvc/.gitignore ./.dvc/

# Mount data/, models/ and reports/ (or a DVC remote) to keep results outside the container.
ENTRYPOINT ["medunlearn"]
# Default: the maintenance flow (forget request -> validated, gated, exported revision),
# e.g. docker run -v $PWD/data:/app/data -v $PWD/models:/app/models ... revise --request requests/x.yaml
CMD ["revise"]
