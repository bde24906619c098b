#!/usr/bin/env bash
# Install, then run the default sweep (the embedded toy world). Extra args go to `rankscope run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec .venv/bin/rankscope run "$@"
