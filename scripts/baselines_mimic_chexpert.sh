#!/usr/bin/env bash
# Text-only baselines on ReXrank's public MIMIC-CXR (2,347 studies) and CheXpert Plus (200 studies) test texts,
# scored offline: no images, no model, no GPU, no MIMIC-CXR or CheXpert Plus download (the test sets come from
# ReXrank's JSONs; report2json --test_set rexrank --text_only). Neither dataset's train split is available here,
# so the report pool of constant and random is IU X-Ray's clean-protocol train split (from the Kaggle CSVs):
# a cross-dataset baseline. nearest_indication and prompt_oracle need the test dataset's own train split and
# are not run; reference_copy (the upper bound) needs no train split and is run.
# Writes results/baselines/rexrank_mimic_cxr/ and results/baselines/rexrank_chexpert_plus/:
#   <method>.scores.json, <method>.baseline.json, table.md (per section: BLEU-4, METEOR, ROUGE-L, CIDEr, F1-14)
# Usage: bash scripts/baselines_mimic_chexpert.sh   Settings (environment): IU (a Kaggle-format folder: its CSVs),
# REXRANK (the folder of ReXrank's JSONs), WORK, OUT, BOOTSTRAP.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_checks.sh
usage_if_asked "${1:-}"
IU=${IU:-data/iu_xray}
REXRANK=${REXRANK:-data/rexrank}
WORK=${WORK:-runs/baselines_rexrank}
OUT=${OUT:-results/baselines}
BOOTSTRAP=${BOOTSTRAP:-1000}
METHODS=(constant random reference_copy)
for f in "$IU/indiana_reports.csv" "$IU/indiana_projections.csv" "$REXRANK/ReXRank_MIMICCXR_test.json" \
  "$REXRANK/ReXRank_CheXpertPlus.json"; do
  [ -f "$f" ] || { echo "error: $f is missing (set IU=... / REXRANK=...)" >&2; exit 1; }
done
command -v java >/dev/null || { echo "error: java not found (METEOR runs meteor-1.5.jar): install a JRE" >&2; exit 1; }
fresh_dir "$WORK"  # emptied only if this script made it
mkdir -p "$OUT"  # committed results: never deleted; each file is replaced (score cards with --overwrite)
python data/report2json.py --protocol clean --data_dir "$IU" --images_from_csv --out "$WORK/iu" >"$WORK/iu.log"
for pair in "mimic-cxr:ReXRank_MIMICCXR_test.json:rexrank_mimic_cxr" \
  "chexpert-plus:ReXRank_CheXpertPlus.json:rexrank_chexpert_plus"; do
  IFS=: read -r dataset json name <<<"$pair"
  python data/report2json.py --dataset "$dataset" --test_set rexrank --rexrank_json "$REXRANK/$json" --text_only \
    --out "$WORK/$name/data" | tail -n 1
  mkdir -p "$OUT/$name"
  for method in "${METHODS[@]}"; do
    PRED="$WORK/$name/$method"
    python eval/baselines.py --method "$method" --json_file "$WORK/$name/data/test_report.json" \
      --train_json "$WORK/iu/train_report.json" --out "$PRED" --seed 0
    cp "$PRED/baseline.json" "$OUT/$name/$method.baseline.json"
    python eval/score.py "$PRED/predictions.jsonl" --out "$OUT/$name/$method.scores.json" --overwrite --bootstrap "$BOOTSTRAP" \
      | tail -n 7
  done
  python scripts/baselines_mimic_chexpert_table.py "$OUT/$name" "${METHODS[@]}"
done
echo "done: $OUT/rexrank_mimic_cxr/table.md, $OUT/rexrank_chexpert_plus/table.md"
