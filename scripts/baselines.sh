#!/usr/bin/env bash
# Text-only baselines (eval/baselines.py: constant, random, nearest_indication, prompt_oracle, reference_copy)
# on the three protocols (clean, r2gen, reference), from the Kaggle CSVs alone: no images, no model, no GPU.
# A few minutes on a CPU box. Writes results/baselines/<protocol>/:
#   <method>.scores.json                standard scores (pycocoevalcap, one line per study, bootstrap CIs)
#   <method>.r2gen_compat.scores.json   r2gen only: eval/score.py --r2gen_compat (as R2Gen scored)
#   <method>.legacy.scores.json         reference only: --legacy --per_image (as the reference paper scored)
#   <method>.baseline.json              what the method chose (ties, missing indications, fallbacks counted)
#   table/table.md, table/table.png     plot/make_tables.py
# and results/baselines/{summary.md, baselines.png} (plot/baselines.py).
# Usage: bash scripts/baselines.sh    Needs: the two Kaggle CSVs (python data/download.py), java, nltk's WordNet
# (python scripts/install_wordnet.py) and, for the r2gen protocol only, R2Gen's annotation.json, which a Kaggle
# download does not have (without it r2gen is skipped, and said so). Settings (environment): DATA (a
# Kaggle-format folder; only its two CSVs are read), ANNOTATION (R2Gen's annotation.json), WORK (splits and
# predictions, not committed; emptied only if this script made it), OUT (files replaced in place, never deleted),
# BOOTSTRAP (resamples), SCORE_FLAGS (extra eval/score.py flags for every card), PROTOCOLS (a subset, e.g.
# PROTOCOLS=reference; the summary and figure still gather every protocol's cards in OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_checks.sh
usage_if_asked "${1:-}"
DATA=${DATA:-data/iu_xray}
ANNOTATION=${ANNOTATION:-$DATA/r2gen_annotation.json}
WORK=${WORK:-runs/baselines}
OUT=${OUT:-results/baselines}
BOOTSTRAP=${BOOTSTRAP:-1000}
read -r -a EXTRA <<<"${SCORE_FLAGS:-}"
METHODS=(constant random nearest_indication prompt_oracle reference_copy)
read -r -a PROTOCOLS <<<"${PROTOCOLS:-clean r2gen reference}"  # e.g. PROTOCOLS=reference: one protocol
START=$SECONDS
step() { printf '\n== %s (%d s)\n' "$*" $((SECONDS - START)); }

# Inputs first, each with what to do about it: nothing below may stop halfway for a missing tool.
for f in "$DATA/indiana_reports.csv" "$DATA/indiana_projections.csv"; do
  [ -f "$f" ] || { echo "error: $f is missing: run python data/download.py --out $DATA (or set DATA=...)" >&2; exit 1; }
done
if [ ! -f "$ANNOTATION" ] && [[ " ${PROTOCOLS[*]} " == *" r2gen "* ]]; then  # a Kaggle download lacks it
  kept=(); for p in "${PROTOCOLS[@]}"; do [ "$p" = r2gen ] || kept+=("$p"); done; PROTOCOLS=("${kept[@]}")
  echo "note: R2Gen's annotation.json not found at $ANNOTATION (a Kaggle download does not have it; set" \
    "ANNOTATION=...): the r2gen protocol is skipped, $OUT/r2gen is left as it was" >&2
fi
command -v java >/dev/null || { echo "error: java not found (METEOR runs meteor-1.5.jar): install a JRE" >&2; exit 1; }
python -c "from rrg.score.legacy import require_wordnet; require_wordnet()" 2>/dev/null || {
  echo "error: nltk's WordNet is missing (the reference protocol's --legacy scoring needs it):" \
    "run python scripts/install_wordnet.py" >&2
  exit 1
}

fresh_dir "$WORK"  # nothing of an earlier run may mix with this one (emptied only if this script made it)
mkdir -p "$OUT"  # committed results: never deleted; each file is replaced (score cards with --overwrite)
for protocol in "${PROTOCOLS[@]}"; do
  step "$protocol: splits from the CSVs (data/report2json.py --images_from_csv)"
  SPLITS="$WORK/$protocol/data"
  EXTRA_SPLIT=()
  [ "$protocol" = r2gen ] && EXTRA_SPLIT=(--r2gen_annotation "$ANNOTATION")
  python data/report2json.py --protocol "$protocol" --data_dir "$DATA" --images_from_csv --out "$SPLITS" \
    "${EXTRA_SPLIT[@]}" >"$WORK/$protocol.report2json.log"
  tail -n 4 "$WORK/$protocol.report2json.log"

  RUNS=()
  for method in "${METHODS[@]}"; do
    step "$protocol: $method"
    PRED="$WORK/$protocol/$method"
    python eval/baselines.py --method "$method" --json_file "$SPLITS/test_report.json" \
      --train_json "$SPLITS/train_report.json" --out "$PRED" --seed 0
    mkdir -p "$OUT/$protocol"
    cp "$PRED/baseline.json" "$OUT/$protocol/$method.baseline.json"
    CARD="$OUT/$protocol/$method.scores.json"
    python eval/score.py "$PRED/predictions.jsonl" --out "$CARD" --overwrite --bootstrap "$BOOTSTRAP" "${EXTRA[@]}" | tail -n 7
    case $protocol in
      clean) RUNS+=("$CARD:$method:clean 70/10/20 (test)") ;;
      r2gen)
        COMPAT="$OUT/$protocol/$method.r2gen_compat.scores.json"
        python eval/score.py "$PRED/predictions.jsonl" --out "$COMPAT" --overwrite --bootstrap "$BOOTSTRAP" \
          --r2gen_compat --train_json "$SPLITS/train_report.json" "${EXTRA[@]}" | tail -n 7
        RUNS+=("$CARD:$method" "$COMPAT:$method (R2Gen-compatible)") ;;
      reference)
        LEGACY="$OUT/$protocol/$method.legacy.scores.json"
        python eval/score.py "$PRED/predictions.jsonl" --out "$LEGACY" --overwrite --legacy --per_image "${EXTRA[@]}" | tail -n 4
        RUNS+=("$CARD:$method" "$LEGACY:$method (per image)") ;;
    esac
  done
  step "$protocol: table"
  python plot/make_tables.py --runs "${RUNS[@]}" --out "$OUT/$protocol/table"
done

step "summary and figure"
python plot/baselines.py --root "$OUT" --out "$OUT/baselines.png" --summary "$OUT/summary.md"
step "done: $OUT/*/table/table.md, $OUT/summary.md, $OUT/baselines.png"
