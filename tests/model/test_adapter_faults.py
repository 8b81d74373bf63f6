"""Adapters that cannot be used are one line naming the folder or file, never a traceback, never a half or
NaN load; NaN scores during generation stop the run instead of becoming empty reports (tiny model, CPU)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from PIL import Image
from safetensors.torch import load_file, save_file

from rrg.generate.batch import GenerationSettings, generate_batch
from rrg.io import InputError
from rrg.model.load import load_adapter, load_base_model, load_processor
from rrg.model.merge import main as merge_main


@pytest.fixture
def adapter(tiny_model_dir, tmp_path) -> Path:
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], task_type="CAUSAL_LM")
    folder = tmp_path / "adapter"
    get_peft_model(load_base_model(str(tiny_model_dir)), config).save_pretrained(folder)
    return folder


def _refused(tiny_model_dir, folder: Path) -> str:
    with pytest.raises(InputError) as error:
        load_adapter(load_base_model(str(tiny_model_dir)), str(folder))
    message = str(error.value)
    assert "\n" not in message, message
    return message


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.slow
def test_nan_weights_are_refused_naming_file_and_tensor(tiny_model_dir, adapter):
    weights = adapter / "adapter_model.safetensors"
    state = load_file(str(weights))
    key = sorted(state)[0]
    state[key][0, 0] = float("nan")
    save_file(state, str(weights))
    assert (
        _refused(tiny_model_dir, adapter)
        == f"{weights}: tensor {key!r} has 1 non-finite value(s) (NaN or inf)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [float("nan"), "8", None])
def test_a_lora_alpha_that_is_not_a_finite_number_is_refused(tiny_model_dir, adapter, alpha):
    _edit_config(adapter, lora_alpha=alpha)
    message = _refused(tiny_model_dir, adapter)
    assert message.startswith(
        f"{adapter / 'adapter_config.json'}: field 'lora_alpha' must be a finite number"
    )


@pytest.mark.slow
def test_a_broken_adapter_config_is_one_line(tiny_model_dir, adapter):
    (adapter / "adapter_config.json").write_text('{"r": 4, ')
    assert _refused(tiny_model_dir, adapter).startswith(
        f"{adapter / 'adapter_config.json'}:1: malformed JSON"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes, said",
    [
        ({"r": 8}, "size mismatch"),  # r in the config no longer the weights' rank
        ({"target_modules": ["no_such_proj"]}, "no_such_proj"),
    ],
)
def test_an_adapter_that_does_not_fit_the_base_is_one_line(tiny_model_dir, adapter, changes, said):
    _edit_config(adapter, **changes)
    message = _refused(tiny_model_dir, adapter)
    assert message.startswith(f"{adapter}: adapter does not fit the base model (") and said in message


@pytest.mark.slow
def test_weights_of_another_shape_are_one_line(tiny_model_dir, adapter):
    weights = adapter / "adapter_model.safetensors"
    state = {k: torch.zeros(v.shape[0] + 1, v.shape[1]) for k, v in load_file(str(weights)).items()}
    save_file(state, str(weights))
    assert "size mismatch" in _refused(tiny_model_dir, adapter)


@pytest.mark.slow
def test_a_pickled_bin_is_refused_in_one_line(tiny_model_dir, adapter):
    (adapter / "adapter_model.safetensors").unlink()

    torch.save({"x": Path("any object weights_only refuses to rebuild")}, adapter / "adapter_model.bin")
    message = _refused(tiny_model_dir, adapter)
    assert message.startswith(
        f"{adapter / 'adapter_model.bin'}: cannot read adapter weights (UnpicklingError"
    )


@pytest.mark.slow
def test_merge_lora_on_a_broken_adapter_is_one_line(tiny_model_dir, adapter, tmp_path, capsys):
    _edit_config(adapter, r=8)
    with pytest.raises(SystemExit) as stopped:
        merge_main(
            ["--model_path", str(tiny_model_dir), "--lora_path", str(adapter), "--out", str(tmp_path / "m")]
        )
    assert stopped.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search("adapter does not fit the base model", errors[0])
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["graphs", "generate"])
def test_nan_scores_stop_generation_instead_of_empty_reports(tiny_model_dir, xray_paths, decoder):
    model = load_base_model(str(tiny_model_dir)).eval()
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    processor = load_processor(str(tiny_model_dir))
    image = Image.open(xray_paths[0]).convert("RGB")
    settings = GenerationSettings(max_new_tokens=3, batch_size=1, decoder=decoder)
    with pytest.raises(InputError, match="the model's scores hold NaN or inf"):
        generate_batch(model, processor, ["Write the report."], [[image]], settings)
