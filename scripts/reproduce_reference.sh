#!/usr/bin/env bash
# The reference paper's experiment with this code, end to end, into results/reference/:
#   its data (reference protocol: its 80/20 split, its prompt with the Problems leak, one entry per view),
#   LoRA r64 / alpha 128, 10 epochs, 64 samples per step, lr 2e-4 (its recipe), the zero-shot baseline,
#   the fine-tuned model, standard metrics with bootstrap CIs and the paper's own metric code (--legacy),
#   and the shuffled-image control; then the comparison table and figures.
# Re-running resumes where a killed run stopped. Needs a CUDA GPU, the dataset (python data/download.py), the model.
# Usage: bash scripts/reproduce_reference.sh   (settings: MODEL, DATA, SPLITS, RUN, OUT environment variables)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_checks.sh
usage_if_asked "${1:-}"
MODEL=${MODEL:-microsoft/llava-med-v1.5-mistral-7b}
DATA=${DATA:-data/iu_xray}
SPLITS=${SPLITS:-data/reference}
RUN=${RUN:-runs/reference_lora}
OUT=${OUT:-results/reference}
need_gpu; need_data "$DATA"; need_model "$MODEL"
IMAGES="$DATA/images/images_normalized"

python data/report2json.py --protocol reference --data_dir "$DATA" --out "$SPLITS"
python train_lora.py --model_path "$MODEL" --json_file "$SPLITS/train_report.json" --image_dir "$IMAGES" \
    --output_dir "$RUN" --epochs 10 --lora_r 64 --lora_alpha 128 --lr 2e-4 --resume
EVAL=(--model_path "$MODEL" --json_file "$SPLITS/test_report.json" --image_dir "$IMAGES" --bootstrap 1000 --legacy --resume)
python eval/llava.py "${EVAL[@]}" --out "$OUT/zero_shot/predictions.jsonl"
python eval/llava_lora.py "${EVAL[@]}" --lora_path "$RUN/final" --image_control shuffle --out "$OUT/lora/predictions.jsonl"

python plot/make_tables.py --runs "$OUT/zero_shot/scores.json:LLaVA-Med zero-shot" \
    "$OUT/lora/scores.json:LLaVA-Med + LoRA (ours)" --out "$OUT/table"
python plot/training_curves.py "$RUN" --out "$OUT/training_curves.png"
python plot/metrics.py "$OUT/zero_shot/scores.json" "$OUT/lora/scores.json" --labels zero-shot LoRA --out "$OUT/metrics.png"
python plot/dataset.py --data_dir "$SPLITS" --out "$OUT/dataset.png"
echo "done: $OUT/table/table.md, $OUT/*.png, scores in $OUT/{zero_shot,lora}/scores.json"
