#!/usr/bin/env bash
# Install checkov into its own virtual environment (infra/.tools/checkov, git-ignored).
# Why not the project venv: checkov pins packaging<24 and cachetools<6, which conflict with
# pytest>=9 (packaging>=24) there. tests/infra finds it at this path (or via CHECKOV_BIN).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
"$python" -m venv "$here/.tools/checkov"
"$here/.tools/checkov/bin/pip" install --quiet 'checkov>=3.2,<4'
"$here/.tools/checkov/bin/checkov" --version
