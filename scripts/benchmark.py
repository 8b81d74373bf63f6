"""GPU benchmark: the reference paper's recipe beside ours, on the exact LLaVA-Med-v1.5-Mistral-7B architecture.

    python scripts/benchmark.py                        # every phase, one process
    python scripts/benchmark.py --phases lora,qlora    # some phases (also: reference, generation, diagnose, gen_diagnose,
                                                       # decoder_agreement)
    python scripts/benchmark.py --quick                # a smoke check of every phase, not figures to report
    python scripts/benchmark.py --markdown results/benchmark-h100.json   # the README table, no GPU

Random weights (speed does not depend on them, and none can be downloaded on a benchmark box): the
model is built from rrg.model.config.llava_med_config() at the real sizes, saved once, and then loaded by OUR
loader (rrg.model.load.load_base_model) for each phase. Samples are real IU X-Ray reports tokenised with the
real tokenizer (576 image tokens + prompt + report: 694 tokens on average); images are synthetic 512x512 PNGs.

Phases, in one process, one report (results/benchmark-<gpu>.json, a table at the end):
  1. reference recipe: fp16 weights, eager attention, batch 1, every sample padded to 2,048 tokens, no
     attention mask, autocast + GradScaler, LoRA r64/a128/dropout 0.05 on q,k,v,o,gate,up,down matched by
     name everywhere (CLIP too), peft's default fp32 adapters; generation batch 1, sampling T=0.2.
  2. our LoRA training (train_lora.py's build_model, collator, sampler and accumulate_gradients) over
     --train_configs, e.g. "8,16+ckpt+compile,8+compile+budget=0.7+log=10" (micro-batch, then options:
     ckpt, compile, budget=X activation memory budget, log=N steps per log line, fp8 (--fp8; with compile),
     lora=q_proj/v_proj (LoRA on these decoder projections only: what the seven adapters cost),
     projector (--train_projector), plr=X (--projector_lr X, with projector), fw=W (--finding_weight W: its loss curve is the weighted mean),
     align (--stage align: the projector alone, no LoRA, at lr 1e-3));
  3. our QLoRA training (bitsandbytes nf4) over --qlora_configs;
  4. our batched generation (rrg.generate.batch.generate_predictions, the eval scripts' path) of
     100-token reports over --gen_configs (batch size[:KV cache[@compile backend]][+workers=N][+liger][+graphs|+generate]);
     each configuration after the first of its batch size is compared with that first one: the share of identical reports
     and where the others first differ (`agreement`; e.g. "256,256:static": the static cache against ours).
Diagnostics, on request: diagnose (data loader alone, one training micro-batch alone, a profile) and
gen_diagnose (one generation batch: prompt pass vs decode steps, per attention, KV cache and padding),
decoder_agreement (decoder graphs against generate() on one batch, with the logit margin where they part).
Compiled configurations pay their compilation in the warm-up; graphs_compiled_while_timed shows none
happened inside the timed window.

Loss curves: every training configuration starts from the same LoRA init (train_lora.py's seed) and, for one
micro-batch size, meets the same samples in the same order; `losses` holds one loss per optimizer step,
the 2 warm-up steps first. Each configuration after the first of its phase gets `curve_vs_first`: the max
and mean relative difference of its first --curve_steps losses from the first configuration's (a faster
setting must stay within 1% of the default). 50 steps of micro-batch 8 x 4: --train_samples 1600 (2 warm-up
and 50 timed steps; the first 50 are compared). The weights are random, so these curves show FP8's rounding on this
architecture, not on the trained LLaVA-Med weights.
Projection: the wall time of the reference experiment (10 epochs of 5,029 samples, 1,251 generations) at
the fastest measured rate of train_lora.py's default recipe and of generation, plus their measured
warm-ups (compilation included); also at the fastest training configuration measured. Model loading, data
preparation, validation and checkpoints are not in it.
Needs the shared data (tokenizer.model and indiana_reports.csv): $RRG_SHARED_DATA or ../shared/data.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import os

# The same allocator setting as train_lora.py (see there), before torch initialises CUDA.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")




from rrg.bench.main import main  # noqa: E402

if __name__ == "__main__":
    main()
