"""Evaluation, reporting and export: perplexity by hand, the loss-curve PNG, the report, the Modelfile."""

from __future__ import annotations

import math

import pytest

from bot.errors import UserError
from training import evaluate, export, report


def test_perplexity_of_uniform_logits_is_the_vocabulary_size():
    import torch

    logits = torch.zeros(1, 4, 5)  # 5-token vocabulary, every prediction uniform
    labels = torch.tensor([[-100, 1, 2, 3]])
    assert evaluate.perplexity_from_logits(logits, labels) == pytest.approx(5.0)


def test_perplexity_scores_response_tokens_only():
    import torch

    # position 0 predicts token 1 with p=1/2, position 1 predicts token 2 with p=1/4; position 2's target is prompt
    p0 = torch.log(torch.tensor([0.25, 0.5, 0.25]))
    p1 = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    garbage = torch.tensor([9.0, -9.0, 0.0])
    logits = torch.stack([p0, p1, garbage, garbage])[None]
    labels = torch.tensor([[0, 1, 2, -100]])
    assert evaluate.perplexity_from_logits(logits, labels) == pytest.approx(math.sqrt(8))  # exp(-(ln½+ln¼)/2)
    assert evaluate.perplexity_from_nll(0.0, 0) != evaluate.perplexity_from_nll(0.0, 0)  # nan: nothing scored


def test_model_perplexity_matches_the_definition(monkeypatch, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from tests.conftest import MODELS_DIR
    from training.recipes.common import base_path

    monkeypatch.setenv("LADDER_MODELS_DIR", str(MODELS_DIR))
    model = AutoModelForCausalLM.from_pretrained(base_path("tiny-llama"))
    rows = [([5, 6, 7, 8, 9], [-100, -100, 7, 8, 9]), ([10, 11, 12], [-100, 11, 12])]
    got = evaluate.perplexity(model, rows, pad_id=0, batch_size=2)
    nll, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in rows:
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
            for t in range(1, len(ids)):
                if labels[t] != -100:
                    nll -= float(logp[t - 1, labels[t]])
                    count += 1
    assert count == 5 and got == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_loss_curve_is_a_valid_png(tmp_path):
    import matplotlib.image

    history = [{"step": s, "loss": 3.0 / s} for s in range(1, 21)]
    path = report.loss_curve(history, tmp_path / "loss.png", evals=[{"step": 10, "loss": 0.5}])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (350, 600)
    assert pixels[..., :3].std() > 0.05  # something was drawn


def test_report_has_table_samples_and_artifacts(tmp_path):
    metrics = {"ppl_before": 7.4912, "ppl_after": 6.6, "steps": 60, "note": None, "nested": {"x": 1}}
    samples = [{"prompt": "Say hi", "before": "hm", "after": "Hi!\nthere"}]
    files = report.write(tmp_path, metrics, [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}], samples,
                         artifacts={"adapter": "/srv/jobs/7/adapter"}, title="job 7")
    text = files["report"].read_text()
    assert text.startswith("## Training report: job 7")
    assert "| metric | value |\n|---|---|\n| ppl_before | 7.491 |\n| ppl_after | 6.6 |\n| steps | 60 |" in text
    assert "| note | n/a |" in text and "nested" not in text
    assert "**Prompt:** Say hi" in text and "- after: Hi! there" in text
    assert "- adapter: `/srv/jobs/7/adapter`" in text and f"- plot: `{tmp_path / 'loss.png'}`" in text
    assert files["plot"].exists()
    assert "plot" not in report.write(tmp_path / "empty", {}, [], [])


def test_modelfile_contents(tmp_path):
    assert export.modelfile("smollm2:135m", "/srv/jobs/7/adapter") == "FROM smollm2:135m\nADAPTER /srv/jobs/7/adapter\n"
    text = export.modelfile("llama3.1:8b", tmp_path / "a", system='Be "brief".', parameters={"temperature": 0.2})
    assert text == f'FROM llama3.1:8b\nADAPTER {tmp_path / "a"}\nPARAMETER temperature 0.2\nSYSTEM """Be "brief"."""\n'
    assert export.modelfile("/models/merged") == "FROM /models/merged\n"


def test_deploy_plan_and_ollama_modelfile(tmp_path):
    with pytest.raises(UserError, match=r"Nothing to deploy"):
        export.deploy_plan(tmp_path)
    export.write_deploy_info(tmp_path, "smollm2", tmp_path / "base", tmp_path / "adapter")
    plan = export.deploy_plan(tmp_path)
    assert plan == export.DeployPlan(tmp_path / "base", tmp_path / "adapter", "smollm2")
    path = export.ollama_modelfile_for(tmp_path, "smollm2:135m")
    assert path.read_text() == f"FROM smollm2:135m\nADAPTER {tmp_path / 'adapter'}\n"
    export.write_deploy_info(tmp_path, "tiny-llama", tmp_path / "model", None)
    with pytest.raises(UserError, match=r"full model, not an adapter"):
        export.ollama_modelfile_for(tmp_path, "x")
    with pytest.raises(UserError, match=r"No LoRA adapter"):
        export.merge_adapter(tmp_path / "model", tmp_path / "nothing", tmp_path / "out")


def test_smoothed_loss_follows_the_trend_without_lagging_at_the_start():
    from training.report import smooth

    noisy = [2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0]
    smoothed = smooth(noisy)
    assert smoothed[0] == 2.0  # bias-corrected: not pulled towards zero
    assert max(smoothed[3:]) - min(smoothed[3:]) < 0.5 < max(noisy) - min(noisy)
