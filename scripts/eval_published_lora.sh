#!/usr/bin/env bash
# Score the reference paper's published LoRA weights (PEFT 0.4 adapter with original LLaVA module names;
# remapped automatically) on its own test split, with standard metrics and its own metric code, plus the
# blank-image control (does the adapter look at the image?), into results/published_lora/.
# Usage: bash scripts/eval_published_lora.sh PATH/TO/LoRA_Weight   (settings: MODEL, DATA, SPLITS, OUT environment
# variables). Needs a CUDA GPU, the dataset (python data/download.py) and the model.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_checks.sh
usage_if_asked "${1:-}"
LORA=${1:?usage: bash scripts/eval_published_lora.sh PATH/TO/LoRA_Weight}
MODEL=${MODEL:-microsoft/llava-med-v1.5-mistral-7b}
DATA=${DATA:-data/iu_xray}
SPLITS=${SPLITS:-data/reference}
OUT=${OUT:-results/published_lora}
[ -f "$LORA/adapter_config.json" ] || { echo "error: $LORA/adapter_config.json not found: not an adapter folder" >&2; exit 1; }
ls "$LORA"/adapter_model.* >/dev/null 2>&1 || { echo "error: no adapter_model.bin/.safetensors in $LORA (unzip lora_final4.zip?)" >&2; exit 1; }
need_gpu; need_data "$DATA"; need_model "$MODEL"

[ -f "$SPLITS/test_report.json" ] || python data/report2json.py --protocol reference --data_dir "$DATA" --out "$SPLITS"
python eval/llava_lora.py --model_path "$MODEL" --lora_path "$LORA" --json_file "$SPLITS/test_report.json" \
    --image_dir "$DATA/images/images_normalized" --bootstrap 1000 --legacy --image_control blank --resume \
    --out "$OUT/predictions.jsonl"
python plot/make_tables.py --runs "$OUT/scores.json:Reference paper's published LoRA (scored here)" --out "$OUT/table"
echo "done: $OUT/scores.json, $OUT/table/table.md"
