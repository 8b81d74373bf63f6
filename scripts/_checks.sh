# Shared input checks of the reproduction scripts (sourced, not run). Each says exactly what is missing.
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
