#!/usr/bin/env bash
# The main job: the streaming server with the shipped default model (`world`: Atari Pong with sound) on the
# CPU, at http://127.0.0.1:8000/
# Extra arguments go to `streamgen serve` (e.g. --port 9000 --model tiny).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
exec streamgen serve --device cpu "$@"
