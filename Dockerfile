# The Docker Space (spaces/README.md, the `sdk: docker` front matter): the app on port 7860 as user 1000.
# CPU torch by default; for a GPU Space build with e.g.
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    COMPRESSOR_CACHE=/home/user/.cache/compressor \
    COMPRESSOR_RUNS=/home/user/app/runs \
    MPLCONFIGDIR=/home/user/.cache/matplotlib \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860

# Spaces run the container as uid 1000: its home, caches and run folders are its own.
RUN useradd --create-home --uid 1000 user
USER 1000
WORKDIR /home/user/app

# torch first, pinned by constraints.txt, from the CPU (or the given CUDA) index; then the package with the
# app extra from the checkout, under the same pins.
COPY --chown=user constraints.txt ./
RUN pip install --user --constraint constraints.txt --index-url "$TORCH_INDEX_URL" torch
COPY --chown=user pyproject.toml README.md ./
COPY --chown=user compressor ./compressor
RUN pip install --user --constraint constraints.txt ".[app]"
COPY --chown=user app.py ./
COPY --chown=user recipes ./recipes

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ.get('GRADIO_SERVER_PORT', '7860'), timeout=8)"]
CMD ["python", "app.py"]
