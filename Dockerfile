# The streamgen server on a CUDA machine (H100 / H200): serving only, no training extras.
#   Build: docker build -t streamgen .
#   Run:   docker run --gpus all --network host streamgen
#          (then http://HOST:8000/; add e.g. `--port 9000` or `--model tiny` after the image name)
#
# WebRTC media travels over UDP on ports that aiortc picks from the ephemeral range for each session
# (it has no port-range setting), so `-p 8000:8000` alone carries the page, the signalling and the
# WebSocket transport, but not WebRTC media. Either:
#   - run with `--network host` (Linux), so the browser reaches those UDP ports directly; or
#   - publish only 8000/tcp and let clients use the WebSocket transport (the page falls back to it by
#     itself when WebRTC cannot connect; `streamgen-client record --transport ws`); or
#   - give the server a STUN server for its public address behind NAT:
#     `-e STREAMGEN_ICE_SERVERS=stun:stun.l.google.com:19302` (the UDP ports must still be reachable).
FROM nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential curl \
    && rm -rf /var/lib/apt/lists/*
# The server runs as an unprivileged user; it needs no write access to its own code.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin streamgen
WORKDIR /opt/streamgen
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch / torchaudio pinned to the GPU machines' 2.11 (CUDA wheels from PyPI).
RUN pip install "torch==2.11.0" "torchaudio==2.11.0"
COPY . .
# The serving install: the `train` extra (the Atari emulator) stays out of this image. EXTRAS=cluster adds
# Ray Serve for `streamgen serve --cluster` / KubeRay (docs/deploy.md).
ARG EXTRAS=""
RUN pip install ".${EXTRAS:+[$EXTRAS]}"
# flash-attn is optional (SDPA is the fallback); uncomment where a matching wheel exists.
# RUN pip install "flash-attn>=2.6" --no-build-isolation
USER streamgen
ENV STREAMGEN_HOST=0.0.0.0 STREAMGEN_PORT=8000 STREAMGEN_DEVICE=cuda
EXPOSE 8000/tcp
# Ready = the pipelines are loaded and warmed up (model loading can take minutes on a first start).
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${STREAMGEN_PORT}/readyz" > /dev/null || exit 1
ENTRYPOINT ["streamgen", "serve"]
