#!/usr/bin/env bash
# Text-only baselines (eval/baselines.py) on ReXrank's IU X-Ray protocol, both boards, from the Kaggle CSVs and
# ReXrank's JSONs alone: no images, no model, no GPU. Every metric that runs offline: pycocoevalcap's, ReXrank's
# BLEU-2, the offline CheXpert-rules F1. Writes results/baselines/rexrank/<board>/:
#   <method>.scores.json      eval/score.py card (one line per study, bootstrap CIs)
#   <method>.baseline.json    what the method chose
#   table/table.md, table/table.png   plot/make_tables.py, with the ReXrank leaderboard rows of the board
# Usage: bash scripts/baselines_rexrank.sh    Settings (environment): DATA (Kaggle-format folder; only its CSVs
# are read), ANNOTATION (R2Gen's annotation.json, the train split), REXRANK (folder of ReXrank's JSONs and CSVs),
# WORK (splits and predictions, not committed), OUT, BOOTSTRAP, TABLES.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_checks.sh
usage_if_asked "${1:-}"
DATA=${DATA:-data/iu_xray}
ANNOTATION=${ANNOTATION:-$DATA/r2gen_annotation.json}
REXRANK=${REXRANK:-data/rexrank}
WORK=${WORK:-runs/baselines-rexrank}
OUT=${OUT:-results/baselines/rexrank}
BOOTSTRAP=${BOOTSTRAP:-1000}
TABLES=${TABLES:-1}  # 0: cards only (the tables come from plot/make_tables.py afterwards)
METHODS=(constant random nearest_indication prompt_oracle reference_copy)
BOARDS=(findings findings_impression)
START=$SECONDS
step() { printf '\n== %s (%d s)\n' "$*" $((SECONDS - START)); }

for f in "$DATA/indiana_reports.csv" "$DATA/indiana_projections.csv" "$ANNOTATION" \
  "$REXRANK/ReXRank_IUXray_test.json" "$REXRANK/ReXRank_IUXray_valid.json"; do
  [ -f "$f" ] || { echo "error: $f is missing (set DATA, ANNOTATION or REXRANK)" >&2; exit 1; }
done
command -v java >/dev/null || { echo "error: java not found (METEOR runs meteor-1.5.jar): install a JRE" >&2; exit 1; }

fresh_dir "$WORK"  # nothing of an earlier run may mix with this one (emptied only if this script made it)
mkdir -p "$OUT"  # committed results: never deleted; each file is replaced (score cards with --overwrite)
for board in "${BOARDS[@]}"; do
  step "$board: splits (data/report2json.py --protocol rexrank --board $board)"
  SPLITS="$WORK/$board/data"
  python data/report2json.py --protocol rexrank --rexrank_dir "$REXRANK" --r2gen_annotation "$ANNOTATION" \
    --board "$board" --data_dir "$DATA" --images_from_csv --out "$SPLITS" >"$WORK/$board.report2json.log"
  tail -n 4 "$WORK/$board.report2json.log"
  RUNS=()
  mkdir -p "$OUT/$board"
  for method in "${METHODS[@]}"; do
    step "$board: $method"
    PRED="$WORK/$board/$method"
    python eval/baselines.py --method "$method" --json_file "$SPLITS/test_report.json" \
      --train_json "$SPLITS/train_report.json" --out "$PRED" --seed 0
    cp "$PRED/baseline.json" "$OUT/$board/$method.baseline.json"
    CARD="$OUT/$board/$method.scores.json"
    python eval/score.py "$PRED/predictions.jsonl" --out "$CARD" --overwrite --bootstrap "$BOOTSTRAP" | tail -n 4
    RUNS+=("$CARD:$method:ReXrank IU X-Ray test (590)")
  done
  [ "$TABLES" = 1 ] || continue
  step "$board: table"
  CSV=$REXRANK/result_iu_xray.csv
  [ "$board" = findings ] && CSV=$REXRANK/findings_result_iu_xray.csv
  python plot/make_tables.py --runs "${RUNS[@]}" --rexrank_csv "$CSV" --out "$OUT/$board/table"
done
step "done: $OUT/*/table/table.md"
