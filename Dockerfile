# streamgen on a CUDA machine (H100 / H200). Build: docker build -t streamgen .
# Run:   docker run --gpus all -p 8000:8000 streamgen streamgen serve --host 0.0.0.0 --device cuda
FROM nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/streamgen
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch / torchaudio pinned to the GPU machines' 2.11 (CUDA wheels from PyPI).
RUN pip install "torch==2.11.0" "torchaudio==2.11.0"
COPY . .
RUN pip install .
# flash-attn is optional (SDPA is the fallback); uncomment where a matching wheel exists.
# RUN pip install "flash-attn>=2.6" --no-build-isolation
EXPOSE 8000
CMD ["streamgen", "serve", "--host", "0.0.0.0", "--port", "8000", "--device", "cuda"]
