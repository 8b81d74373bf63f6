"""Several GPUs: the real train_lora.py and eval scripts under `accelerate launch`, per engine and GPU count.

    python scripts/benchmark_multigpu.py                                   # on a 4-GPU machine: everything
    python scripts/benchmark_multigpu.py --gpus 1,2 --phases train         # some of it
    python scripts/benchmark_multigpu.py --markdown results/benchmark-h100x4.json   # the README tables, no GPU

Like scripts/benchmark.py: the LLaVA-Med-v1.5-Mistral-7B architecture with random weights (built once,
saved, then loaded by each launched process through train_lora.py's own loader), real IU X-Ray reports
with synthetic 512x512 images, written as an ordinary split file. Each configuration is one launch of the
unmodified command a user would type; the figures are read from what it writes:

  train       train_lora.py per engine (ddp, fsdp, zero2: scripts/accelerate/<engine>.yaml) and GPU count,
              always micro-batch 8 and an effective batch of 64 (accumulation 64 / (8 x GPUs)). From
              train_log.jsonl: samples/s over the steps after --warmup_steps, the losses; from the launch:
              the wall time until the first optimizer step's log line (process start, model loading and
              compilation included); from nvidia-smi, polled: the peak memory used on each GPU.
              One GPU is `python train_lora.py` (no launcher): the baseline of the scaling efficiency
              (samples/s on N GPUs / (N x one-GPU samples/s), on the same machine).
  resume      DDP on the most GPUs: stopped halfway (--stop_after_steps), resumed with --resume; its final
              adapter against the uninterrupted run's (max abs difference); validation every half.
  qlora       QLoRA (--load_in_4bit --gradient_checkpointing) under DDP on 2 GPUs: each rank's 4-bit model
              on its own GPU (memory per GPU).
  generation  eval/llava.py on 1..N GPUs (`accelerate launch` for N > 1), 768 reports per GPU (3 batches
              of 256 on each), 100-token greedy reports
              (--max_new_tokens 100; a random model rarely stops early: tokens are counted), --no_score
              (scoring needs Java, not on GPU boxes). reports/s from the predictions files' growth after
              the first batch, as benchmark.py times from the loader's first batch.

Needs the shared data (tokenizer.model, indiana_reports.csv): $RRG_SHARED_DATA or ../shared/data.
DeepSpeed is optional (requirements-multigpu.txt); an engine whose package is missing is recorded as such.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split


from rrg.bench.multigpu import main  # noqa: E402

if __name__ == "__main__":
    main()
