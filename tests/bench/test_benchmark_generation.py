"""The generation benchmark's parsing and arithmetic (scripts/benchmark.py): configurations, and
the agreement of each configuration's texts with the first one of its batch size. The timed runs need a
GPU; these parts do not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

import rrg.bench.diagnostics  # noqa: E402
import rrg.bench.generation  # noqa: E402
import rrg.bench.markdown  # noqa: E402
import rrg.bench.settings  # noqa: E402
import rrg.bench.specs  # noqa: E402
import rrg.bench.training  # noqa: E402


def words(text: str) -> list[str]:
    """A stand-in tokenizer: one token per word."""
    return text.split()


def test_generation_configs_parse_cache_and_workers():
    assert rrg.bench.specs.GenSpec.parse("256", workers=4) == rrg.bench.specs.GenSpec(batch_size=256, workers=4)
    spec = rrg.bench.specs.GenSpec.parse("320:static+workers=8", workers=4)
    assert spec == rrg.bench.specs.GenSpec(batch_size=320, cache="static", workers=8)
    with pytest.raises(ValueError, match="unknown generation option 'fp8'"):
        rrg.bench.specs.GenSpec.parse("256+fp8")  # tried and dropped (rrg/model/kernels/float8.py says why)
    spec = rrg.bench.specs.GenSpec.parse("256:static@cudagraphs")
    assert (spec.cache, spec.compile_backend) == ("static", "cudagraphs")
    with pytest.raises(ValueError, match="needs the static cache"):
        rrg.bench.specs.GenSpec.parse("256:dynamic@cudagraphs")
    spec = rrg.bench.specs.GenSpec.parse("256+liger+workers=2")
    assert spec.liger and spec.workers == 2 and spec.cache is None
    row = {"batch_size": 256, "cache": "dynamic", "liger": True}
    assert rrg.bench.specs.gen_flags(row) == "`--batch_size 256 --liger --decoder generate`"  # rows before graphs
    with pytest.raises(
        ValueError, match=r"^.256:static\+liger.: --liger with --cache_implementation static is not supported"
    ):
        rrg.bench.specs.GenSpec.parse("256:static+liger")
    assert rrg.bench.specs.gen_label(row) == "ours bs 256 dynamic liger"
    with pytest.raises(ValueError, match="unknown generation option 'fp8prompt'"):
        rrg.bench.specs.GenSpec.parse("256+fp8prompt")  # measured and dropped (rrg/model/kernels/float8.py says why)
    row = {"batch_size": 256, "cache": "dynamic", "fp8_prompt": True}  # a committed row of the dropped option reads
    assert rrg.bench.specs.gen_flags(row) == "`--batch_size 256 --decoder generate`, FP8 prompt pass (dropped)"
    assert rrg.bench.specs.GenSpec.parse("256+generate").decoder == "generate"
    spec = rrg.bench.specs.GenSpec.parse("256+graphs")
    assert spec.decoder == "graphs"
    row = {"batch_size": 256, "cache": "dynamic", "decoder": "graphs"}
    assert (rrg.bench.specs.gen_label(row), rrg.bench.specs.gen_flags(row)) == ("ours bs 256 dynamic graphs", "`--batch_size 256 --decoder graphs`")
    with pytest.raises(ValueError, match="--decoder graphs decodes greedily"):
        rrg.bench.specs.GenSpec.parse("256:static+graphs")


@pytest.mark.slow
def test_decode_steps_under_the_cudagraphs_backend_generate_the_eager_tokens(tiny_model_dir, xray_paths):
    """The static cache's decode step compiled with another backend (on CPU dynamo traces it and the backend
    runs its eager kernels: CUDA graphs are GPU-only) yields the tokens of the same cache run eagerly."""
    import torch
    import torch._dynamo as dynamo
    from PIL import Image
    from transformers import LlavaForConditionalGeneration

    from rrg.generate.batch import encode_batch
    from rrg.model.processor import load_processor

    model = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    views = [[Image.open(p).convert("RGB")] for p in xray_paths[:2]]
    questions = ["Describe.", "Write the full report."]
    inputs = encode_batch(load_processor(tiny_model_dir), questions, views, per_image=16)
    kwargs = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False, "cache_implementation": "static"}
    config = rrg.bench.generation.decode_compile_config("cudagraphs")
    assert (config.backend, config.mode, config.dynamic) == ("cudagraphs", "default", False)
    config._compile_all_devices = True  # transformers compiles on GPUs only, unless told
    dynamo.reset()
    dynamo.utils.counters.clear()
    with torch.no_grad():
        eager = model.generate(**inputs, **kwargs, disable_compile=True)
        compiled = model.generate(**inputs, **kwargs, compile_config=config)
    assert dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the decode step was compiled
    assert torch.equal(eager, compiled)
    assert rrg.bench.generation.decode_compile_config(None).backend == "inductor"


def test_first_difference_is_the_first_differing_token():
    assert rrg.bench.generation.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert rrg.bench.generation.first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert rrg.bench.generation.first_difference([7, 2], [8, 2]) == 0
    assert rrg.bench.generation.first_difference([1, 2], [1, 2, 3]) == 2  # one ends where the other goes on


def test_agreement_counts_identical_reports_and_averages_where_the_others_differ():
    reference = ["a b c", "a b c", "x y", "p q r s"]
    other = ["a b c", "a b d", "x y", "p z r s"]
    result = rrg.bench.generation.agreement(reference, other, words)
    assert result["reports"] == 4 and result["identical"] == 2 and result["identical_share"] == 0.5
    assert result["mean_first_difference_token"] == 1.5  # tokens 2 and 1
    assert result["median_first_difference_token"] == 1.5
    same = rrg.bench.generation.agreement(reference, reference, words)
    assert same["identical_share"] == 1.0 and same["mean_first_difference_token"] is None
    with pytest.raises(ValueError, match="4 reference reports but 3"):
        rrg.bench.generation.agreement(reference, other[:3], words)


def test_each_configuration_is_compared_with_the_first_of_its_batch_size():
    rows = [
        {"batch_size": 256, "cache": "dynamic"},
        {"batch_size": 320, "cache": "dynamic", "error": "OutOfMemoryError"},
        {"batch_size": 256, "cache": "static"},
        {"batch_size": 320, "cache": "dynamic"},
        {"batch_size": 320, "cache": "static"},
        {"batch_size": 256, "cache": "static"},
    ]
    texts = [["a b", "c d"], None, ["a b", "c e"], ["a b", "c d"], ["a x", "c d"], ["a b", "c d"]]
    rrg.bench.generation.with_agreement(rows, texts, words)
    assert "agreement" not in rows[0] and "agreement" not in rows[1]  # firsts, and a failed run
    assert rows[2]["agreement"]["with_row"] == 0 and rows[2]["agreement"]["identical_share"] == 0.5
    assert rows[2]["agreement"]["with"] == "ours bs 256 dynamic"
    # bs 320's first run failed: its first with texts is the reference of the later ones.
    assert "agreement" not in rows[3]
    assert rows[4]["agreement"]["with_row"] == 3 and rows[4]["agreement"]["mean_first_difference_token"] == 1
    assert (
        rows[5]["agreement"]["with_row"] == 0 and rows[5]["agreement"]["identical_share"] == 1.0
    )  # not row 2


def static_report() -> dict:
    report = json.loads((REPO / "results" / "benchmark-h100.json").read_text())
    dynamic = next(r for r in report["generation"] if r.get("run") == "run 7" and r["batch_size"] == 256)
    dynamic = {k: v for k, v in dynamic.items() if k != "run"}
    static = {**dynamic, "cache": "static", "reports_per_s": 40.0, "peak_gib": 48.0}
    static["agreement"] = {"with": rrg.bench.specs.gen_label(dynamic), "with_row": 0, "reports": 1280, "identical": 640,
                           "identical_share": 0.5, "mean_first_difference_token": 37.25,
                           "median_first_difference_token": 30.0}  # fmt: skip
    return {**report, "generation": [dynamic, static]}


def test_markdown_shows_each_row_and_its_agreement():
    table = rrg.bench.markdown.markdown_table(static_report())
    assert "| ours, `--batch_size 256 --decoder generate`, static KV cache | 40.00 | 48.0 |" in table
    assert "| ours, `--batch_size 256 --decoder generate` | 31.05 | 55.5 | 112x |" in table
    assert "| `--batch_size 256 --decoder generate`, static KV cache vs `--batch_size 256 --decoder generate` | 1280 | 50.0% | 37.2 |" in table


def test_markdown_of_the_committed_results_tags_each_row_with_its_run():
    """The README's tables from the committed results, which gather several invocations."""
    table = rrg.bench.markdown.markdown_table(json.loads((REPO / "results" / "benchmark-h100.json").read_text()))
    assert "| ours, `--batch_size 256 --decoder generate` (run 7) | 31.05 | 55.5 | 112x |" in table
    assert "| ours `--batch_size 8 --fp8` (run 10) | 25.90 |" in table
    assert (
        "| `--batch_size 256 --decoder generate`, static@cudagraphs KV cache (run 10) vs `--batch_size 256 --decoder generate` (run 10) | 768 | 0.0% | 7.9 |"
        in table
    )
    assert "| ours `--batch_size 8 --fp8` (run 10) | 22 | 22.59% | 7.03% |" in table


def test_markdown_without_agreement_has_no_agreement_table():
    report = static_report()
    report["generation"] = report["generation"][:1]
    assert "identical" not in rrg.bench.markdown.markdown_table(report)


def test_summary_prints_the_agreement():
    summary = rrg.bench.markdown.summary_table(static_report())
    assert "ours bs 256 static 4 workers" in summary
    assert (
        "agreement, ours bs 256 static 4 workers: 50.0% of 1280 reports identical to ours bs 256 dynamic "
        "4 workers, the others first differ at token 37.2 on average" in summary
    )


def test_a_bad_generation_configuration_stops_before_anything_is_built():
    cfg = rrg.bench.settings.BenchConfig(gen_configs="256,256+fp8")
    rrg.bench.generation.check_generation_specs(cfg, {"lora"})  # not asked for: not checked
    with pytest.raises(
        SystemExit, match=r"^error: --gen_configs: unknown generation option 'fp8' in '256\+fp8'"
    ):
        rrg.bench.generation.check_generation_specs(cfg, {"lora", "generation"})
    with pytest.raises(SystemExit, match="^error: --curve_steps 0: at least 1"):
        rrg.bench.training.training_specs(rrg.bench.settings.BenchConfig(curve_steps=0), {"lora"})


def test_liger_kernels_where_they_cannot_run_stop_before_anything_is_built(monkeypatch):
    """Liger's kernels are refused up front, with one line naming the option (here: not installed)."""
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # its import fails, whatever this box has
    with pytest.raises(
        SystemExit, match=r"^error: --gen_configs liger needs liger-kernel, which is not installed"
    ):
        rrg.bench.generation.check_generation_specs(rrg.bench.settings.BenchConfig(gen_configs="256,256+liger"), {"generation"})
    rrg.bench.generation.check_generation_specs(rrg.bench.settings.BenchConfig(gen_configs="256"), {"generation"})  # none asked for: no check


def test_logit_margins_count_spacings_at_the_first_difference():
    reference = torch.tensor([[5, 6, 7], [1, 2, 3], [4, 4, 4]])
    other = torch.tensor([[5, 6, 7], [1, 9, 3], [8, 4, 4]])
    logits = torch.zeros(3, 3, 10)
    logits[1, 1, 2], logits[1, 1, 9] = 1.5, 1.5 - 3 * 2.0**-7  # 3 spacings of a logit in [1, 2)
    logits[2, 0, 4], logits[2, 0, 8] = 4.0, 4.0 - 2.0**-5  # 1 spacing of a logit in [4, 8)
    result = rrg.bench.diagnostics.logit_margins_in_ulps(logits, reference, other)
    assert result == {
        "sequences": 3, "identical": 1, "mean_first_difference_token": 0.5,
        "margin_spacings_median": 2.0, "margin_spacings_max": 3.0,
    }  # fmt: skip
