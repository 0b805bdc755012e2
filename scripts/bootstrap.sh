#!/usr/bin/env bash
# Installs everything streamgen needs into ./.venv, from nothing. Idempotent: a second run with the
# same pyproject files does no work. Usage: source scripts/bootstrap.sh [--with-browser]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
STAMP=.venv/.streamgen-installed
WANT="$(cat pyproject.toml setup.py $(ls client/pyproject.toml 2>/dev/null) | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[bootstrap] installing torch 2.11 and the project (a few minutes on a fresh machine)"
  pip install -q --disable-pip-version-check "torch==2.11.0" "torchaudio==2.11.0"
  pip install -q --disable-pip-version-check -e ".[test,cluster]"
  echo "$WANT" > "$STAMP"
fi
if [ "${1:-}" = "--with-browser" ] && [ ! -x /usr/bin/chromium ]; then
  echo "[bootstrap] installing Debian's chromium for the browser tests"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium > /dev/null
fi
if ! command -v espeak-ng > /dev/null; then
  # The avatar set's speech (training/data/avatar_speech.py calls libespeak-ng, which this package brings).
  echo "[bootstrap] installing Debian's espeak-ng for the avatar data"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng > /dev/null
fi
