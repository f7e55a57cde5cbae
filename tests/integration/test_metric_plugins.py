"""Quality-metric plug-ins: the registry, fidelity on real images, CLIP on a tiny local CLIP model, and clear
errors for what is not installed."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from ecad_search.metrics import MetricNotAvailableError, get_metric, metric_names
from ecad_search.models import get_model
from ecad_search.search.presets import PRESETS
from ecad_search.testing import tiny_clip_tokenizer


def test_registry() -> None:
    assert {"reward", "fidelity", "image-reward", "clip"} <= set(metric_names())
    with pytest.raises(ValueError, match="unknown metric 'lpips': use one of"):
        get_metric("lpips")


def test_fidelity_scores_ssim_against_references() -> None:
    metric = get_metric("fidelity").load(get_model("pixart-alpha"))
    torch.manual_seed(0)
    references = torch.rand(3, 3, 16, 16)
    noisy = (references + 0.2 * torch.randn_like(references)).clamp(0, 1)
    scores = metric.score(torch.stack([references[0], noisy[1], noisy[2]]), ["a"] * 3, references)
    assert scores[0] == pytest.approx(1.0, abs=1e-6) and (scores[1:] < 0.9).all()
    figures = metric.extra_figures(noisy, ["a"] * len(noisy), references)
    assert 10 < figures["psnr_db_mean"] < 30 and figures["identical_images"] == 0


def test_image_reward_without_the_package_is_a_clear_error() -> None:
    with pytest.raises(MetricNotAvailableError, match="pip install image-reward"):
        get_metric("image-reward").load(get_model("pixart-alpha"))


def test_clip_on_a_tiny_local_model(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "eos_token_id": tokenizer.eos_token_id,
                     "bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 224, "patch_size": 32},
        projection_dim=8,
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    monkeypatch.setenv("CLIP_MODEL_DIR", str(tmp_path))
    metric = get_metric("clip").load(get_model("pixart-alpha"))
    images = torch.rand(2, 3, 32, 32)
    scores = metric.score(images, ["a red cat", "a blue house"], None)
    assert scores.shape == (2,) and (scores.abs() <= 1.0 + 1e-6).all()
    assert torch.allclose(scores, metric.score(images, ["a red cat", "a blue house"], None))
    monkeypatch.setenv("CLIP_MODEL_DIR", str(tmp_path / "missing"))
    with pytest.raises(MetricNotAvailableError, match="CLIP_MODEL_DIR"):
        get_metric("clip").load(get_model("pixart-alpha"))


def test_ecad_preset_is_the_papers_settings() -> None:
    ecad = PRESETS["ecad"]
    crossover, mutation = ecad.crossover_operator(), ecad.mutation_operator(1596)
    assert ecad.population == 72 and ecad.forbid_no_cache
    assert crossover.n_points == 4 and crossover.prob.value == pytest.approx(0.9)
    assert mutation.prob.value == pytest.approx(0.05) and mutation.prob_var is None
    default = PRESETS["default"]
    assert default.population == 24 and not default.forbid_no_cache
    assert default.mutation_operator(1596).prob.value == pytest.approx(0.05)
