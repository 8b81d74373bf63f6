#!/usr/bin/env bash
# Make RadEval's own virtual environment (default .venv-radeval/, git-ignored) for eval/score.py --radeval.
#
# usage: bash scripts/install_radeval.sh [--venv DIR] [--python PYTHON] [--version VERSION]
#
# RadEval (jbdel/RadEval, `radeval` on PyPI, MIT) cannot share our environment: it needs medspacy, which pins
# spaCy < 3.8, and we need spaCy >= 3.8. So it gets an environment of its own, which eval/score.py drives
# through files (rrg/score/radeval.py, rrg/score/radeval_runner.py). numpy < 2 and pandas < 3 are pinned beside it: the
# spaCy 3.7 that medspacy brings is built against numpy 1, and RaTEScore fails to import on numpy 2
# ("numpy.dtype size changed"). Needs PyPI (about 6.4 GB: torch with its CUDA libraries, ~5 min measured).
# Model weights are NOT fetched: each metric downloads its own on first use, or names them when offline.
#
#   --venv DIR        where the environment goes (default .venv-radeval in the repository)
#   --python PYTHON   the interpreter it is made from (default python3; RadEval needs >= 3.11)
#   --version V       the radeval version (default 2.2.1, the one tested here)
#
# Re-running updates an environment this script made; a folder it did not make is refused, never deleted.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-radeval
PYTHON=python3
VERSION=2.2.1
MARK=.made-by-rrg-install-radeval
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --venv) VENV=${2:?--venv needs a folder}; shift 2 ;;
    --python) PYTHON=${2:?--python needs an interpreter}; shift 2 ;;
    --version) VERSION=${2:?--version needs a version}; shift 2 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -e "$VENV" ] && [ ! -f "$VENV/$MARK" ]; then
  echo "error: $VENV exists and was not made by this script: choose another --venv (nothing was changed)" >&2
  exit 1
fi
command -v "$PYTHON" >/dev/null || { echo "error: $PYTHON not found (--python)" >&2; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "error: RadEval needs Python >= 3.11; $PYTHON is $("$PYTHON" -V 2>&1)" >&2; exit 1; }
START=$SECONDS
if [ ! -e "$VENV" ]; then
  "$PYTHON" -m venv "$VENV"
  touch "$VENV/$MARK"
fi
"$VENV/bin/python" -m pip install --upgrade pip
"$VENV/bin/python" -m pip install "radeval==$VERSION" "numpy<2" "pandas<3"
# -P: run from anywhere without this repository's rrg/score/radeval.py shadowing the package.
"$VENV/bin/python" -P -c 'import importlib.metadata as m; from radeval import RadEval; print("radeval", m.version("radeval"))'
echo "RadEval environment ready in $VENV ($((SECONDS - START)) s, $(du -sh "$VENV" | cut -f1))."
echo "Score with: python eval/score.py PREDICTIONS.jsonl --radeval bleu,rouge,bertscore,radcliq,ratescore"
