#!/usr/bin/env bash
# Install (rankscope alone: the test extras are not needed to run), then run the default sweep
# (the embedded toy world). Extra args go to `rankscope run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh ""
exec .venv/bin/rankscope run "$@"
