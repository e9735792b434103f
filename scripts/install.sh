#!/bin/sh
# Install synthbrew-exporter with exactly the locked runtime dependencies into a new venv.
# The Dockerfile runs this; so does a test, so a broken install step fails CI, not a release.
#   usage: scripts/install.sh VENV_DIR      (needs python3 and uv; UV=path/to/uv to choose one)
set -eu
venv=$1
uv=${UV:-uv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$venv"
"$uv" export --frozen --no-default-groups --no-emit-project --format requirements-txt \
    --output-file "$work/requirements.txt" --quiet
"$venv/bin/pip" install --no-cache-dir --quiet --require-hashes -r "$work/requirements.txt"
"$uv" build --wheel --out-dir "$work/dist" --quiet
"$venv/bin/pip" install --no-cache-dir --quiet --no-deps "$work"/dist/*.whl
"$venv/bin/synthbrew-exporter" --version
