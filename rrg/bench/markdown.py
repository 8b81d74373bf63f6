"""The benchmark's Markdown tables."""

from __future__ import annotations

import rrg.generate.batch
import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
from rrg.bench.reference import experiment_projection
from rrg.bench.specs import gen_flags, gen_label, row_label, run_tag, train_flags


def projection_lines(projection: dict | None) -> list[str]:
    """The projection in words (the printed summary and the Markdown)."""
    if projection is None:
        return ["projected reference experiment: needs a LoRA and a generation row"]
    e = projection["experiment"]
    lines = [
        f"projected reference experiment ({e['epochs']} epochs x {e['train_samples']:,} samples, then "
        f"{e['generations']:,} reports at {projection['generation']}; measured warm-ups included):"
    ]
    for key, name in (("default_recipe", "default recipe"), ("fastest", "fastest measured")):
        p = projection.get(key)
        if p is None:
            lines.append(f"  {name}: not measured")
            continue
        if key == "fastest" and p == projection.get("default_recipe"):
            lines.append(f"  {name}: the default recipe")
            continue
        gen_warmup = (
            f"{p['generation_warmup_s']:.0f} s" if p["generation_warmup_measured"] else "not measured"
        )
        lines.append(
            f"  {name} ({p['training']}): {p['total_s'] / 60:.1f} min = training {p['training_s'] / 60:.1f} "
            f"(warm-up {p['training_warmup_s']:.0f} s) + generation {p['generation_s'] / 60:.1f} "
            f"(warm-up {gen_warmup})"
        )
    return lines


def curve_lines(report: dict) -> list[str]:
    """Each training configuration's loss curve against the first of its phase, in words."""
    lines = []
    for key, what in (("lora", "LoRA"), ("qlora", "QLoRA")):
        rows = report.get(key, [])
        for r in rows[1:]:
            c = r.get("curve_vs_first")
            if c is None:
                continue
            name = f"{what} {row_label(r)} vs {row_label(rows[0])}"
            if "not_compared" in c:
                lines.append(f"  {name}: not compared, {c['not_compared']}")
            else:
                lines.append(
                    f"  {name}, first {c['steps']} steps: max {c['max_rel_diff']:.2%}, mean {c['mean_rel_diff']:.2%}"
                )
    return (
        ["loss curves against the first configuration of their phase (relative difference per step):"] + lines
        if lines
        else []
    )


def summary_table(report: dict) -> str:
    ref = report.get("reference") or {}
    lines = [f"{'':34} {'samples/s':>10} {'tok/s':>8} {'peak GiB':>9} {'MFU':>6} {'x ref':>6}"]

    def row(name: str, r: dict | None, mfu_key: str = "mfu") -> None:
        if not r or "samples_per_s" not in r:
            lines.append(f"{name:34} {'-':>10}")
            return
        ratio = r["samples_per_s"] / ref["samples_per_s"] if ref.get("samples_per_s") else float("nan")
        lines.append(
            f"{name:34} {r['samples_per_s']:10.2f} {r['real_tokens_per_s']:8.0f} {r['peak_gib']:9.1f} "
            f"{r.get(mfu_key, float('nan')):6.1%} {ratio:6.2f}"
        )

    row("reference recipe (fp16, pad 2048)", ref, "mfu_padded")
    for r in report.get("lora", []):
        label = f"ours LoRA {row_label(r)}"
        row(label, r) if "error" not in r else lines.append(f"{label:34} {r['error'][:60]}")
    for r in report.get("qlora", []):
        label = f"ours QLoRA {row_label(r)}"
        row(label, r) if "error" not in r else lines.append(f"{label:34} {r['error'][:60]}")
    lines.append("")
    lines.append(f"{'generation, 100-token reports':34} {'reports/s':>10} {'peak GiB':>9} {'x ref':>6}")
    ref_gen = (ref.get("generation") or {}).get("reports_per_s")
    if ref_gen:
        lines.append(f"{'reference (bs 1, T=0.2, fp16)':34} {ref_gen:10.2f}")
    for r in report.get("generation", []):
        if "error" in r:
            lines.append(f"{gen_label(r):34} {r['error'][:60]}")
            continue
        ratio = r["reports_per_s"] / ref_gen if ref_gen else float("nan")
        lines.append(f"{gen_label(r):34} {r['reports_per_s']:10.2f} {r['peak_gib']:9.1f} {ratio:6.1f}")
    for r in report.get("generation", []):
        if "agreement" in r:
            lines.append(f"agreement, {gen_label(r)}: {agreement_text(r['agreement'])}")
    lines += [""] + curve_lines(report)
    lines += [""] + projection_lines(experiment_projection(report))
    return "\n".join(lines)


def agreement_text(a: dict) -> str:
    first = a["mean_first_difference_token"]
    where = f", the others first differ at token {first:.1f} on average" if first is not None else ""
    return f"{a['identical_share']:.1%} of {a['reports']} reports identical to {a['with']}{where}"


def markdown_table(report: dict) -> str:
    """The README's performance table, from a results JSON (a run without the reference phase: no
    reference row, no ratios)."""
    ref = report.get("reference")
    rows = [
        "| training (train_lora.py flags) | samples/s | real tokens/s | peak GiB | MFU | vs reference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    if ref:
        rows.append(
            f"| reference recipe (fp16, eager, bs 1 padded to 2,048) | {ref['samples_per_s']:.2f} | "
            f"{ref['real_tokens_per_s']:.0f} | {ref['peak_gib']:.1f} | {ref['mfu_padded']:.1%} | 1.00x |"
        )
    for key in ("lora", "qlora"):
        for r in report.get(key, []):
            if "error" in r:
                continue
            name = f"ours {train_flags(r, key == 'qlora')}{run_tag(r)}"
            ratio = f"{r['samples_per_s'] / ref['samples_per_s']:.2f}x" if ref else ""
            rows.append(
                f"| {name} | {r['samples_per_s']:.2f} | {r['real_tokens_per_s']:.0f} | {r['peak_gib']:.1f} | "
                f"{r['mfu']:.1%} | {ratio} |"
            )
    gen_ref = ref["generation"]["reports_per_s"] if ref else None
    rows += [
        "",
        "| generation, 100-token reports | reports/s | peak GiB | vs reference |",
        "|---|---:|---:|---:|",
    ]
    if gen_ref:
        rows.append(f"| reference (bs 1, sampling T=0.2, fp16, eager) | {gen_ref:.2f} | | 1x |")
    for r in report.get("generation", []):
        if "error" not in r:
            ratio = f"{r['reports_per_s'] / gen_ref:.0f}x" if gen_ref else ""
            rows.append(
                f"| ours, {gen_flags(r)}{run_tag(r)} | {r['reports_per_s']:.2f} | {r['peak_gib']:.1f} | {ratio} |"
            )
    compared = [r for r in report.get("generation", []) if "agreement" in r]
    if compared:
        rows += [
            "",
            "| greedy texts against the first configuration of the batch size | reports | identical "
            "| mean first difference (token) |",
            "|---|---:|---:|---:|",
        ]
        for r in compared:
            a = r["agreement"]
            first = (
                "" if a["mean_first_difference_token"] is None else f"{a['mean_first_difference_token']:.1f}"
            )
            rows.append(
                f"| {gen_flags(r)}{run_tag(r)} vs {gen_flags(report['generation'][a['with_row']])}"
                f"{run_tag(report['generation'][a['with_row']])} | {a['reports']} | "
                f"{a['identical_share']:.1%} | {first} |"
            )
    curves = [
        r
        for key in ("lora", "qlora")
        for r in report.get(key, [])[1:]
        if "max_rel_diff" in r.get("curve_vs_first", {})
    ]
    if curves:
        rows += [
            "",
            "| loss curve against the first training row of its phase and run (train_lora.py flags) | steps "
            "| max rel. difference | mean rel. difference |",
            "|---|---:|---:|---:|",
        ]
        for key in ("lora", "qlora"):
            for r in report.get(key, [])[1:]:
                c = r.get("curve_vs_first", {})
                if "max_rel_diff" in c:
                    rows.append(
                        f"| ours {train_flags(r, key == 'qlora')}{run_tag(r)} | {c['steps']} | {c['max_rel_diff']:.2%} | "
                        f"{c['mean_rel_diff']:.2%} |"
                    )
    projection = experiment_projection(report)
    if projection is not None:
        rows += [""] + [
            line.strip() if i == 0 else f"- {line.strip()}"
            for i, line in enumerate(projection_lines(projection))
        ]
    return "\n".join(rows)
