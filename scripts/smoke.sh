#!/usr/bin/env bash
# The whole pipeline end to end on CPU, no network, a few minutes: a small IU-X-Ray-shaped sample and a
# tiny random LLaVA-Med (original format, converted on the fly) through the real commands:
#   download --from-dir -> report2json -> train_lora (a few steps, resumed once) -> eval with the adapter
#   (+ blank-image control) -> score (n-gram and clinical) -> labeler validation -> tables and figures
#   -> case browser and qualitative figure.
# Usage: bash scripts/smoke.sh [OUT_DIR]   (default smoke_out/; needs the shared data: $RRG_SHARED_DATA
# or ../shared/data). OUT_DIR must be new, empty, or made by an earlier smoke run (which is then emptied).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_checks.sh
usage_if_asked "${1:-}"
OUT=${1:-smoke_out}
fresh_dir "$OUT"  # emptied only if an earlier smoke run made it; any other folder is refused
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false RRG_CACHE="$OUT/cache"
step() { printf '\n== %s\n' "$*"; }
START=$SECONDS

step "inputs: sample Kaggle folder + tiny original-format checkpoint"
python scripts/make_smoke_inputs.py --out "$OUT" --studies 40
MODEL="$OUT/tiny-llava-med-original"
IMAGES="$OUT/iu_xray/images/images_normalized"

step "data/download.py --from-dir"
python data/download.py --from-dir "$OUT/kaggle" --out "$OUT/iu_xray" --no-count-check

step "data/report2json.py (clean protocol, frontal + lateral)"
python data/report2json.py --protocol clean --views both --data_dir "$OUT/iu_xray" --out "$OUT/data"

step "train_lora.py: 4 steps, stopped after 2 and resumed"
TRAIN=(python train_lora.py --model_path "$MODEL" --json_file "$OUT/data/train_report.json"
       --val_json "$OUT/data/val_report.json" --image_dir "$IMAGES" --output_dir "$OUT/lora" --views all
       --max_steps 4 --batch_size 4 --gradient_accumulation_steps 2 --lr 1e-3 --lora_r 8 --lora_alpha 16
       --save_steps 2 --eval_steps 2 --num_workers 0)
"${TRAIN[@]}" --stop_after_steps 2
"${TRAIN[@]}" --resume

step "eval/llava_lora.py with the adapter, blank-image control, bootstrap"
python eval/llava_lora.py --model_path "$MODEL" --lora_path "$OUT/lora/final" \
    --json_file "$OUT/data/test_report.json" --image_dir "$IMAGES" --out "$OUT/eval/predictions.jsonl" \
    --max_new_tokens 24 --batch_size 4 --num_workers 0 --image_control blank --bootstrap 200

step "eval/score.py on the predictions (per study, R2Gen normalisation)"
python eval/score.py "$OUT/eval/predictions.jsonl" --out "$OUT/eval/scores_rescored.json"

step "clinical scores: the offline CheXpert-14 labeler in scores.json, and its validation against MeSH"
python - "$OUT/eval/scores.json" <<'PY'
import json, sys
card = json.load(open(sys.argv[1]))
assert "f1_micro_14" in card["clinical"]["summary"] and "ci95" in card["clinical"], "scores.json: no clinical block"
assert "clinical" in card["image_control"]["delta"], "scores.json: no clinical image-control delta"
print("clinical:", {k: round(v, 3) for k, v in card["clinical"]["summary"].items() if k.startswith("f1_")})
PY
python scripts/validate_labeler.py --data_dir "$OUT/iu_xray" --out "$OUT/labeler_validation.json" --samples 1

step "tables and figures"
RUN="Smoke (tiny random model)"  # the run's name in the table and the figure's legend
SPLIT="clean 7:1:2, 40-study sample (test)"  # the split report2json made above (a card does not name it)
python plot/make_tables.py --runs "$OUT/eval/scores.json:$RUN:$SPLIT" --out "$OUT/table"
python plot/training_curves.py "$OUT/lora" --out "$OUT/figures/training_curves.png"
python plot/metrics.py "$OUT/eval/scores.json" --labels "$RUN" --out "$OUT/figures/metrics.png"
python plot/dataset.py --data_dir "$OUT/data" --out "$OUT/figures/dataset.png"

step "case browser and qualitative figure"
CASES=("$OUT/eval" --image_dir "$IMAGES" --entries "$OUT/data/test_report.json")
SHOT=()
if command -v chromedriver >/dev/null 2>&1; then
  SHOT=(--screenshot "$OUT/figures/browse.png")
else
  echo "no chromedriver: the page is built, its screenshot skipped (apt-get install chromium chromium-driver)"
fi
python plot/browse.py "${CASES[@]}" --names "smoke (tiny random model)" --out "$OUT/browse/index.html" "${SHOT[@]}"
python plot/qualitative.py "${CASES[@]}" --name "smoke (tiny random model)" --out "$OUT/figures/qualitative.png"

step "outputs ($((SECONDS - START)) s)"
cat <<DONE
  splits:        $OUT/data/{train,val,test}_report.json, leak audit $OUT/data/leak_audit.json
  adapter:       $OUT/lora/final  (log $OUT/lora/train_log.jsonl, checkpoints $OUT/lora/checkpoints)
  predictions:   $OUT/eval/predictions.jsonl, $OUT/eval/predictions.blank.jsonl
  scores:        $OUT/eval/scores.json
  table:         $OUT/table/table.md, $OUT/table/table.png
  figures:       $OUT/figures/{training_curves,metrics,metrics_clinical,dataset}.png
  labeler check: $OUT/labeler_validation.json
  cases:         $OUT/browse/index.html, $OUT/figures/qualitative.{png,pdf} (screenshot $OUT/figures/browse.png)
DONE
