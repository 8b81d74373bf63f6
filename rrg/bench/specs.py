"""What one measured configuration is (TrainSpec, GenSpec) and how tables name it."""

from __future__ import annotations

from dataclasses import dataclass

import rrg.generate.batch
import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
import rrg.train.settings
from rrg.bench.settings import DECODER_PROJECTIONS
from rrg.generate.batch import GenerationSettings
from rrg.generate.run import EvalConfig
from rrg.io import InputError


@dataclass
class TrainSpec:
    """One training configuration of the sweep, e.g. "16+compile+budget=0.3"."""

    micro_batch: int
    checkpointing: bool = False
    compile: bool = False
    budget: float = 1.0
    # plain: torch's AdamW straight on the bf16 LoRA weights (before fp32 master weights), for comparison
    plain_adamw: bool = False
    # Steps per log line: train_lora.py reads the loss back from the GPU (a wait) only for those
    log_every: int = rrg.train.settings.TrainConfig.logging_steps
    fp8: bool = False  # train_lora.py --fp8: FP8 matmuls for the frozen base weights (rrg.model.kernels.float8)
    # lora=q_proj/v_proj: LoRA on these decoder projections only ("": all seven, the default). Measures
    # what the adapters cost: the gradient still flows through every layer, only the adapters differ.
    lora_modules: str = ""
    train_projector: bool = False  # projector: train_lora.py --train_projector (peft modules_to_save)
    # fw=W: train_lora.py --finding_weight W (its loss is the weighted mean, so its curve is another quantity)
    finding_weight: float = 1.0
    projector_lr: float = 0.0  # plr=X: train_lora.py --projector_lr X (needs projector)
    # align: train_lora.py --stage align (the projector alone, no LoRA, at the stage's lr 1e-3; rrg.train.align)
    align_stage: bool = False

    @classmethod
    def parse(cls, text: str) -> TrainSpec:
        head, *options = text.strip().split("+")
        spec = cls(micro_batch=int(head))
        for option in options:
            if option == "ckpt":
                spec.checkpointing = True
            elif option == "compile":
                spec.compile = True
            elif option == "plain":
                spec.plain_adamw = True
            elif option.startswith("log="):
                spec.log_every = int(option.split("=", 1)[1])
            elif option.startswith("budget="):
                spec.budget = float(option.split("=", 1)[1])
            elif option == "fp8":
                spec.fp8 = True
            elif option == "projector":
                spec.train_projector = True
            elif option == "align":
                spec.align_stage = True
            elif option.startswith("plr="):
                spec.projector_lr = float(option.split("=", 1)[1])
                if not 0 < spec.projector_lr < float("inf"):
                    raise ValueError(f"{text!r}: plr= takes a finite rate > 0")
            elif option.startswith("fw="):
                spec.finding_weight = float(option.split("=", 1)[1])
                if not spec.finding_weight > 0 or spec.finding_weight == float("inf"):
                    raise ValueError(f"{text!r}: fw= takes a finite weight > 0")
            elif option.startswith("lora="):
                spec.lora_modules = option.split("=", 1)[1]
                unknown = set(spec.lora_modules.split("/")) - set(DECODER_PROJECTIONS)
                if unknown:
                    raise ValueError(
                        f"{text!r}: lora= takes {'/'.join(DECODER_PROJECTIONS)}, not {sorted(unknown)}"
                    )
            else:
                raise ValueError(
                    f"unknown training option {option!r} in {text!r} "
                    "(ckpt, compile, budget=X, log=N, plain, fp8, lora=NAMES, projector, plr=X, fw=W, align)"
                )
        if spec.projector_lr and not spec.train_projector:
            raise ValueError(
                f"{text!r}: plr= needs projector (train_lora.py refuses --projector_lr without it)"
            )
        if spec.align_stage and (spec.train_projector or spec.projector_lr or spec.lora_modules or spec.fp8):
            raise ValueError(
                f"{text!r}: align trains the projector alone (no LoRA): it takes no projector, plr=, lora= or fp8"
            )
        if spec.fp8 and not spec.compile:
            raise ValueError(f"{text!r}: fp8 needs compile (train_lora.py refuses --fp8 without --compile)")
        return spec

    @classmethod
    def default(cls) -> TrainSpec:
        """train_lora.py's default recipe."""
        recipe = rrg.train.settings.TrainConfig
        return cls(
            micro_batch=recipe.batch_size,
            checkpointing=recipe.gradient_checkpointing,
            compile=recipe.compile,
            budget=recipe.activation_memory_budget,
            log_every=recipe.logging_steps,
            fp8=recipe.fp8,
        )

    def label(self) -> str:
        parts = [f"mb{self.micro_batch}", "ckpt" if self.checkpointing else ""]
        parts += ["compile" if self.compile else "", f"budget {self.budget:g}" if self.budget < 1 else ""]
        default_log = rrg.train.settings.TrainConfig.logging_steps
        parts += [f"log every {self.log_every}" if self.log_every != default_log else ""]
        parts += ["bf16 AdamW, no fp32 master" if self.plain_adamw else "", "fp8" if self.fp8 else ""]
        parts += [f"LoRA on {self.lora_modules.replace('/', ', ')} only" if self.lora_modules else ""]
        parts += ["projector trained" if self.train_projector else ""]
        parts += ["align stage (projector alone)" if self.align_stage else ""]
        parts += [f"at lr {self.projector_lr:g}" if self.projector_lr else ""]
        parts += [f"finding weight {self.finding_weight:g}" if self.finding_weight != 1 else ""]
        return " ".join(p for p in parts if p)

    def target_modules(self) -> str:
        """train_lora.py's --target_modules for this configuration."""
        if not self.lora_modules:
            return rrg.train.settings.TrainConfig.target_modules
        every = "|".join(DECODER_PROJECTIONS)
        assert every in rrg.train.settings.LANGUAGE_MODEL_TARGETS  # the default regex, with fewer names
        return rrg.train.settings.LANGUAGE_MODEL_TARGETS.replace(every, self.lora_modules.replace("/", "|"))


@dataclass
class GenSpec:
    """One generation configuration of the sweep, e.g. "256:static+workers=8"."""

    batch_size: int
    cache: str | None = None  # GenerationSettings.cache_implementation (None: rrg.model.kernels.kv_cache)
    workers: int = EvalConfig.num_workers  # loader workers
    # With the static cache: the torch.compile backend of generate's decode step (None: transformers'
    # default, inductor with CUDA graphs). "cudagraphs" captures CUDA graphs of the eager kernels,
    # without inductor's code generation: CUDA graphs without a compile per shape.
    compile_backend: str | None = None
    # eval --liger (GenerationSettings.liger): Liger's kernels for the prompt pass's RMSNorms and MLPs
    liger: bool = False
    # eval --decoder: "graphs" (rrg.generate.graphs) or "generate"; None: GenerationSettings' choice
    decoder: str | None = None

    @classmethod
    def parse(cls, text: str, workers: int = EvalConfig.num_workers) -> GenSpec:
        head, *options = text.strip().split("+")
        size, *cache = head.split(":")
        cache_name, _, backend = cache[0].partition("@") if cache else (None, "", "")
        if backend and cache_name != "static":
            raise ValueError(f"a compile backend (@{backend}) needs the static cache, in {text!r}")
        spec = cls(batch_size=int(size), cache=cache_name, workers=workers, compile_backend=backend or None)
        for option in options:
            if option.startswith("workers="):
                spec.workers = int(option.split("=", 1)[1])
            elif option == "liger":
                spec.liger = True
            elif option in ("graphs", "generate"):
                spec.decoder = option
            else:
                raise ValueError(
                    f"unknown generation option {option!r} in {text!r} (workers=N, liger, graphs, generate)"
                )
        try:  # the settings eval would make of it: combinations they refuse are refused here, up front
            GenerationSettings(cache_implementation=spec.cache, liger=spec.liger, decoder=spec.decoder)
        except InputError as e:
            raise ValueError(f"{text!r}: {e}") from None
        return spec


def row_label(r: dict) -> str:
    if "config" in r:
        return TrainSpec(**r["config"]).label()
    return f"mb{r['micro_batch']}" + (" ckpt" if r["gradient_checkpointing"] else "")  # older results


def train_flags(r: dict, four_bit: bool) -> str:
    """The train_lora.py flags that run a measured configuration (its other settings are the defaults)."""
    if "config" not in r:
        return row_label(r)
    spec = TrainSpec(**r["config"])
    flags = [f"--batch_size {spec.micro_batch}"]
    flags += ["--load_in_4bit"] if four_bit else []
    flags += ["--gradient_checkpointing"] if spec.checkpointing else []
    flags += [] if spec.compile else ["--no_compile"]
    flags += ["--fp8"] if spec.fp8 else []
    default_budget = rrg.train.settings.TrainConfig.activation_memory_budget
    if spec.compile and not spec.checkpointing and spec.budget != default_budget:
        flags.append(f"--activation_memory_budget {spec.budget:g}")
    if spec.log_every != rrg.train.settings.TrainConfig.logging_steps:
        flags.append(f"--logging_steps {spec.log_every}")
    if spec.lora_modules:
        flags.append(f"--target_modules '{spec.target_modules()}'")
    flags += ["--train_projector"] if spec.train_projector else []
    flags += ["--stage align"] if spec.align_stage else []
    flags += [f"--projector_lr {spec.projector_lr:g}"] if spec.projector_lr else []
    flags += [f"--finding_weight {spec.finding_weight:g}"] if spec.finding_weight != 1 else []
    note = " (bf16 AdamW without fp32 master weights, as before: not a flag)" if spec.plain_adamw else ""
    return "`" + " ".join(flags) + "`" + note


def gen_label(row: dict) -> str:
    label = f"ours bs {row['batch_size']} {row.get('cache', '')}"
    if row.get("fp8_prompt"):  # an FP8 prompt pass: measured and dropped (rrg/model/kernels/float8.py says why)
        label += " fp8 prompt"
    if row.get("liger"):
        label += " liger"
    if row.get("decoder") == "graphs":  # rows of earlier runs were made with generate()
        label += " graphs"
    if "workers" in row:  # rows of earlier runs did not record them
        label += f" {row['workers']} workers"
    return label


def gen_flags(row: dict) -> str:
    """The eval flags of a measured generation configuration, as the Markdown table shows them."""
    flags = f"`--batch_size {row['batch_size']}" + (" --liger" if row.get("liger") else "")
    flags += f" --decoder {row.get('decoder', 'generate')}`"
    flags += "" if row["cache"] == "dynamic" else f", {row['cache']} KV cache"
    return flags + (", FP8 prompt pass (dropped)" if row.get("fp8_prompt") else "")


def run_tag(row: dict) -> str:
    """' (run 10)' for a row of a results file that gathers several invocations (its note says which)."""
    return f" ({row['run']})" if "run" in row else ""
