# Shared input checks of the reproduction scripts (sourced, not run). Each says exactly what is missing.
# Usage: source scripts/_checks.sh   (from another script in scripts/, at the repository root)
need_gpu() {
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null || {
    echo "error: no CUDA GPU visible to PyTorch (this run fine-tunes and evaluates a 7B model)" >&2; exit 1; }
}
need_data() {  # $1: the folder data/download.py laid out
  for f in "$1/indiana_reports.csv" "$1/indiana_projections.csv" "$1/images/images_normalized"; do
    [ -e "$f" ] || { echo "error: $f is missing: run python data/download.py --out $1 first" >&2; exit 1; }
  done
}
need_model() {  # $1: Hub id or folder
  if [ -d "$1" ]; then
    [ -f "$1/config.json" ] || { echo "error: $1 has no config.json: not a model folder" >&2; exit 1; }
  else
    python -c "import sys; from huggingface_hub import hf_hub_download; hf_hub_download(sys.argv[1], 'config.json')" "$1" \
      >/dev/null 2>&1 || { echo "error: cannot fetch $1 from the Hugging Face Hub (offline? pass MODEL=/path/to/folder)" >&2; exit 1; }
  fi
}
usage_if_asked() {  # $1: the first argument; prints the script's header comment (its usage) and exits on -h/--help
  case ${1:-} in
    -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "scripts/$(basename "$0")"; exit 0 ;;
  esac
}
fresh_dir() {  # $1: a folder this script (re)creates. Emptied only when an earlier run of it made it (its
  # .made-by-rrg marker); a folder with anything else in it, or tracked by git, is refused, never deleted.
  local dir=$1
  case $dir in -*|"") echo "error: '$dir' is not a folder name" >&2; exit 2 ;; esac
  if [ -n "$(git ls-files -- "$dir" 2>/dev/null | head -n 1)" ]; then
    echo "error: $dir holds files tracked by git: not deleting it; choose another folder" >&2; exit 1
  fi
  if [ -f "$dir/.made-by-rrg" ]; then
    rm -rf -- "$dir"
  elif [ -d "$dir" ] && [ -n "$(ls -A -- "$dir")" ]; then
    echo "error: $dir exists and was not made by this script: not deleting it; choose another folder (or delete it yourself)" >&2; exit 1
  elif [ -e "$dir" ] && [ ! -d "$dir" ]; then
    echo "error: $dir is not a folder" >&2; exit 1
  fi
  mkdir -p -- "$dir"
  touch -- "$dir/.made-by-rrg"
}
if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # run, not sourced: say what it is
  sed -n '1,2s/^# //p' "$0"
fi
