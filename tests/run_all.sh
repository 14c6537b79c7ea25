#!/usr/bin/env bash
# Runs every test of the course; called by `make test` (after set-up).
# Brings the broker and the cache server up if none is running; takes down what it started.
# Prints each stage's time at the end and fails when one has grown past its budget.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export LAB_TIME_SCALE="${LAB_TIME_SCALE:-0.2}"
export LAB_STRICT=1
export PYTHONDONTWRITEBYTECODE=1
# Test processes at once: two. The notebooks wait on timers as much as they compute, and more
# workers are quicker on an idle machine (measured on two cores: three 478 s, two cores still
# about 45% idle; four 442 s), but with three workers and a CPU hog beside them, and with four
# alone, two timing tests flipped each time (one saw a publish wait 2.8 model s for its ack).
# A bigger machine can take more (LAB_TEST_WORKERS).
WORKERS="${LAB_TEST_WORKERS:-2}"
# The browser stage decides no verdict and waits on pages, kernels and widgets: three at once
# used the two cores better (one run here: 405 s with three, 491 s with two before its lighter
# polling; a notebook still has 240 s to run).
BROWSER_WORKERS="${LAB_BROWSER_WORKERS:-3}"
mkdir -p tests/artifacts
TIMES=tests/artifacts/stage_times.tsv
: > "$TIMES"

started_broker=0
if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ] && ! $BIN/python -m labsupport broker status >/dev/null 2>&1; then
  $BIN/python -m labsupport broker up
  started_broker=1
fi
started_cache=0
if [ -z "${LAB_CACHE_URL:-}" ] && ! $BIN/python -m labsupport cache status >/dev/null 2>&1; then
  $BIN/python -m labsupport cache up && started_cache=1
fi
cleanup() {
  if [ "$started_cache" = 1 ]; then $BIN/python -m labsupport cache down >/dev/null || true; fi
  if [ "$started_broker" = 1 ]; then $BIN/python -m labsupport broker down || true; fi
}
# LAB_CPU_HOG=1 (`make test-hog`): a busy process pinned to one core runs beside the pytest and
# browser stages, the way learners' machines are; every verdict must hold. The stage budgets grow
# by half, since one core is taken.
BUDGET_PCT=100
if [ "${LAB_CPU_HOG:-0}" = 1 ]; then
  BUDGET_PCT=150
fi
# Budgets are for the machine they were set on; a slower one gets proportionally more (a fixed
# Python loop, timed now, before anything else runs: labsupport/course/stage_times.py).
SPEED_PCT=$($BIN/python -m labsupport.course.stage_times --speed)
hog_pid=""
start_hog() {
  if [ "${LAB_CPU_HOG:-0}" = 1 ]; then
    $BIN/python tests/cpu_hog.py 7200 &
    hog_pid=$!
    echo "CPU hog running beside the tests (pid $hog_pid, pinned to one core)"
  fi
}
stop_hog() {
  if [ -n "$hog_pid" ]; then kill "$hog_pid" 2>/dev/null || true; wait "$hog_pid" 2>/dev/null || true; hog_pid=""; fi
}
trap 'stop_hog; cleanup' EXIT

# stage NAME BUDGET_SECONDS COMMAND...: run it, record its time (a failure stops the run).
stage() {
  local name=$1 budget=$2 start end
  shift 2
  echo "== $name"
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  printf '%s\t%s\t%s\n' "$name" "$((end - start))" \
    "$((budget * BUDGET_PCT / 100 * SPEED_PCT / 100))" >> "$TIMES"
}

stage "lint (ruff)" 30 $BIN/ruff check labsupport tests conftest.py
start_hog

# One pytest run: unit tests, doctests, the exercise checkers, and every notebook and solution
# under nbval (stored outputs), one kernel per notebook, its cells in order on one worker, each
# cell run twice in a row with the same verdicts and nothing left behind (root conftest.py).
shopt -s nullglob
notebooks=(notebooks/*.ipynb solutions/*.ipynb)
stage "pytest: unit, checkers, notebooks (nbval, each cell twice)" 900 \
  $BIN/python -m pytest -p no:cacheprovider -q -n "$WORKERS" \
    --doctest-modules labsupport tests --ignore=tests/browser --ignore=tests/artifacts \
    --nbval-lax --nbval-cell-timeout=300 --nbval-sanitize-with tests/nbval_sanitize.cfg \
    "${notebooks[@]}" --junitxml=tests/artifacts/pytest.xml --durations=12

# Separate run: Playwright's sync API keeps an event loop running in the main thread.
# After the pytest stage, not beside it: though that stage leaves the two cores about 60% idle
# (it waits on model time), one browser worker beside it took it from 650 s to 822 s, and at
# nice 19 to 764 s (a claim there ran again, inconclusive); the whole suite took 898 s against
# 941 s, too little to pay for timing claims that share the cores (measured 2026-12-02).
# Three notebooks at once, each worker with its own JupyterLab and Chromium. This stage checks
# that every cell runs without error and the widgets render; the verdicts were decided (and
# re-run when inconclusive) by the nbval pass above, so here a claim only prints its verdict
# (LAB_STRICT=0): two kernels sharing the cores must not stop Run All on a timing claim.
stage "browser (Playwright + Chromium + JupyterLab)" 600 \
  env LAB_STRICT=0 LAB_INCONCLUSIVE=warn \
  $BIN/python -m pytest -p no:cacheprovider -q -n "$BROWSER_WORKERS" tests/browser

stop_hog
$BIN/python -m labsupport.course.stage_times "$TIMES"
