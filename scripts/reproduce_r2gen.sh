#!/usr/bin/env bash
# The same experiment on the standard R2Gen split (train 2,069 / val 296 / test 590 studies), the split of
# R2Gen, R2GenCMN, R2GenGPT and most IU X-Ray papers, into results/r2gen/: frontal + lateral views, no
# label-derived text in the prompt, validation loss every 50 steps and the best adapter (best/) evaluated.
# Needs R2Gen's annotation.json: ANNOTATION=/path/to/annotation.json (from the R2Gen project's IU X-Ray data;
# a Kaggle download does not have it), a CUDA GPU, the dataset (python data/download.py) and the model.
# Usage: bash scripts/reproduce_r2gen.sh   (settings: MODEL, DATA, SPLITS, RUN, OUT, ANNOTATION environment variables)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_checks.sh
usage_if_asked "${1:-}"
MODEL=${MODEL:-microsoft/llava-med-v1.5-mistral-7b}
DATA=${DATA:-data/iu_xray}
SPLITS=${SPLITS:-data/r2gen}
RUN=${RUN:-runs/r2gen_lora}
OUT=${OUT:-results/r2gen}
ANNOTATION=${ANNOTATION:-data/r2gen_annotation.json}
[ -f "$ANNOTATION" ] || { echo "error: R2Gen's annotation.json not found at $ANNOTATION (set ANNOTATION=...)" >&2; exit 1; }
need_gpu; need_data "$DATA"; need_model "$MODEL"
IMAGES="$DATA/images/images_normalized"

python data/report2json.py --protocol r2gen --r2gen-annotation "$ANNOTATION" --views both --data_dir "$DATA" --out "$SPLITS"
python train_lora.py --model_path "$MODEL" --json_file "$SPLITS/train_report.json" --val_json "$SPLITS/val_report.json" \
    --image_dir "$IMAGES" --views all --output_dir "$RUN" --epochs 10 --lora_r 64 --lora_alpha 128 --lr 2e-4 \
    --eval_steps 50 --save_steps 50 --resume
EVAL=(--model_path "$MODEL" --json_file "$SPLITS/test_report.json" --image_dir "$IMAGES" --bootstrap 1000 --resume)
python eval/llava.py "${EVAL[@]}" --out "$OUT/zero_shot/predictions.jsonl"
python eval/llava_lora.py "${EVAL[@]}" --lora_path "$RUN/best" --image_control shuffle --out "$OUT/lora/predictions.jsonl"

python plot/make_tables.py --runs "$OUT/zero_shot/scores.json:LLaVA-Med zero-shot" \
    "$OUT/lora/scores.json:LLaVA-Med + LoRA (ours, best val)" --out "$OUT/table"
python plot/training_curves.py "$RUN" --out "$OUT/training_curves.png"
python plot/metrics.py "$OUT/zero_shot/scores.json" "$OUT/lora/scores.json" --labels zero-shot LoRA --out "$OUT/metrics.png"
echo "done: $OUT/table/table.md, $OUT/*.png"
