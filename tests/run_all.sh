#!/usr/bin/env bash
# Runs every test of the course; called by `make test` (after set-up).
# Brings the broker and the cache server up if none is running; takes down what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export LAB_TIME_SCALE="${LAB_TIME_SCALE:-0.2}"
export LAB_STRICT=1
export PYTHONDONTWRITEBYTECODE=1
mkdir -p tests/artifacts

started_broker=0
if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ] && ! $BIN/python -m labsupport broker status >/dev/null 2>&1; then
  $BIN/python -m labsupport broker up
  started_broker=1
fi
started_cache=0
if [ -z "${LAB_CACHE_URL:-}" ] && ! $BIN/python -m labsupport cache status >/dev/null 2>&1; then
  $BIN/python -m labsupport cache up && started_cache=1
fi
hog=""
cleanup() {
  if [ "$started_cache" = 1 ]; then $BIN/python -m labsupport cache down >/dev/null || true; fi
  if [ -n "$hog" ]; then kill "$hog" 2>/dev/null || true; fi
  if [ "$started_broker" = 1 ]; then $BIN/python -m labsupport broker down || true; fi
}
trap cleanup EXIT

echo "== lint (ruff)"
$BIN/ruff check labsupport tests

echo "== unit, broker and notebook tests (pytest)"
$BIN/python -m pytest -p no:cacheprovider -q --doctest-modules labsupport tests \
  --ignore=tests/browser --junitxml=tests/artifacts/pytest.xml

# The verdicts are decided (and re-run when inconclusive) by the pytest notebook test above;
# nbval and the browser check stored outputs and widgets, so an inconclusive claim only prints.
export LAB_INCONCLUSIVE=warn
echo "== notebooks (nbval), beside a CPU hog pinned to one core"
shopt -s nullglob
notebooks=(notebooks/*.ipynb solutions/*.ipynb)
$BIN/python tests/cpu_hog.py 1800 &
hog=$!
$BIN/python -m pytest -p no:cacheprovider -q --nbval-lax --nbval-cell-timeout=300 \
  --nbval-sanitize-with tests/nbval_sanitize.cfg "${notebooks[@]}"
kill "$hog" 2>/dev/null || true
hog=""

# Separate run: Playwright's sync API keeps an event loop running in the main thread.
echo "== browser (Playwright + Chromium + JupyterLab)"
$BIN/python -m pytest -p no:cacheprovider -q tests/browser
