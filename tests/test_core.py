"""The compute core against the plainest possible computation of the same numbers."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from lmc_ray import config
from lmc_ray.execution import local, plan
from lmc_ray.compute.data import read_table
from lmc_ray.errors import ConfigError
from lmc_ray.execution.recorder import Recorder
from lmc_ray.storage.store import Store

from conftest import NLI_LABELS, sweep_config


def reference_logits(path_a, path_b, texts_a, texts_b, alphas) -> dict[float, torch.Tensor]:
    """Plain HF: build each interpolated state dict, load it, run one unpadded example at a time."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path_a)
    a = AutoModelForSequenceClassification.from_pretrained(path_a).state_dict()
    b = AutoModelForSequenceClassification.from_pretrained(path_b).state_dict()
    model = AutoModelForSequenceClassification.from_pretrained(path_a).eval()
    out = {}
    for alpha in alphas:
        model.load_state_dict({k: (1 - alpha) * a[k] + alpha * b[k] if a[k].is_floating_point() else a[k] for k in a})
        with torch.no_grad():
            out[alpha] = torch.stack([model(**tok(p, h, return_tensors="pt")).logits[0] for p, h in zip(texts_a, texts_b)])
    return out


def reference_metrics(logits: torch.Tensor, labels) -> tuple[float, float, float, float]:
    """Mean cross-entropy, then accuracy, F1 (macro; the positive class's for two classes) and MCC by scikit-learn."""
    y = torch.tensor(labels)
    preds = logits.argmax(-1).numpy()
    average = "binary" if logits.shape[1] == 2 else "macro"
    return (F.cross_entropy(logits, y).item(), accuracy_score(labels, preds),
            f1_score(labels, preds, average=average, zero_division=0), matthews_corrcoef(labels, preds))


def reference_curve(path_a, path_b, texts_a, texts_b, labels, alphas):
    logits = reference_logits(path_a, path_b, texts_a, texts_b, alphas)
    return np.array([reference_metrics(logits[al], labels) for al in alphas])


@pytest.mark.parametrize("packing", [False, True])
def test_core_curve_equals_plain_hf(tmp_path, population, packing):
    """Padded batches and packed streams (lmc_ray/compute/packed.py) alike."""
    cfg = config.from_dict(sweep_config(population[:2], tmp_path / "store", alphas=[0.0, 0.3, 0.5, 1.0],
                                        packing=packing))
    p = plan.prepare(cfg)
    local.run(p, progress=False)
    rows = Store(p.cfg.store).curves().to_table().to_pandas().sort_values("alpha")
    df = read_table(cfg.eval_sets[0])
    labels = [NLI_LABELS.index(v) for v in df.gold_label]
    want = reference_curve(population[0], population[1], df.premise, df.hypothesis, labels, cfg.alphas)
    got = rows[rows.subset == "all"][["loss", "accuracy", "f1", "mcc"]].to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert list(rows.alpha) == cfg.alphas and (rows.n_examples == 64).all()
    assert np.ptp(got[:, 0]) > 1e-3  # the models really differ, so the comparison means something
    # The weight-space distance the paper logs per pair, from the two checkpoints directly.
    from safetensors.numpy import load_file

    wa, wb = (load_file(p / "model.safetensors") for p in population[:2])
    want_d = np.sqrt(sum(np.sum((wb[k].astype(np.float64) - wa[k]) ** 2) for k in wa if wa[k].dtype.kind == "f"))
    assert rows.distance.nunique() == 1 and rows.distance.iloc[0] == pytest.approx(want_d, rel=1e-5)


def test_adaptive_alpha_adds_the_peak_midpoints_and_they_equal_plain_hf(tmp_path, population):
    from lmc_ray.compute.chord import refine_points

    cfg = config.from_dict(sweep_config(population[:2], tmp_path / "store", alphas=5, refine=2))
    p = plan.prepare(cfg)
    local.run(p, progress=False)
    rows = Store(p.cfg.store).curves().to_table().to_pandas().query("subset == 'all'").sort_values("alpha")
    loss = dict(zip(rows.alpha, rows.loss))
    # Replay the rule on the stored losses: round 1 from the grid, round 2 from grid + round 1.
    seen = {a: loss[a] for a in cfg.alphas if 0 < a < 1}
    for _ in range(cfg.refine):
        for a in refine_points(seen, (loss[0.0], loss[1.0])):
            seen[a] = loss[a]
    assert sorted(loss) == sorted({0.0, 1.0, *seen}) and len(loss) == 5 + 4
    df = read_table(cfg.eval_sets[0])
    labels = [NLI_LABELS.index(v) for v in df.gold_label]
    want = reference_curve(population[0], population[1], df.premise, df.hypothesis, labels, sorted(loss))
    np.testing.assert_allclose(rows[["loss", "accuracy", "f1", "mcc"]].to_numpy(), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("packing", [False, True])
def test_pooled_hans_scoring_per_subset_equals_an_example_by_example_reference(tmp_path, population, packing):
    """HANS scored as the paper does — non-entailment = max(neutral, contradiction), cross-entropy over the two
    pooled logits — at both ends and inside the line, for every subset row, against plain HF pooled by hand and
    metrics by scikit-learn."""
    from test_ray_sweep import _two_sets

    cfg = _two_sets(population[:2], tmp_path / "store", alphas=[0.0, 0.4, 1.0])
    cfg.eval_sets[1].balance_by = "subcase"  # both labels, all three heuristics
    cfg.packing = packing
    p = plan.prepare(cfg)
    local.run(p, progress=False)
    rows = Store(p.cfg.store).curves().to_table().to_pandas().query("eval_set == 'hans'")
    spec = cfg.eval_sets[1]
    df = read_table(spec)
    logits = reference_logits(population[0], population[1], df.sentence1, df.sentence2, cfg.alphas)
    ent, neu, con = (NLI_LABELS.index(n) for n in ("entailment", "neutral", "contradiction"))
    labels = np.array([0 if g == "entailment" else 1 for g in df.gold_label])  # eval classes: entailment, non-ent.
    subsets = {"all": np.ones(len(df), bool)}
    for (h, g), idx in df.groupby(["heuristic", "gold_label"]).groups.items():
        subsets[f"heuristic,gold_label={h},{g}"] = df.index.isin(idx)
    assert set(rows.subset) == set(subsets) and len(set(labels)) == 2
    for alpha in cfg.alphas:
        pooled = torch.stack([logits[alpha][:, ent], logits[alpha][:, [neu, con]].amax(-1)], dim=-1)
        for name, mask in subsets.items():
            got = rows[(rows.alpha == alpha) & (rows.subset == name)][["loss", "accuracy", "f1", "mcc"]].to_numpy()[0]
            want = reference_metrics(pooled[torch.from_numpy(mask)], labels[mask].tolist())
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=f"{name} at α = {alpha}")
            assert rows[(rows.alpha == alpha) & (rows.subset == name)].n_examples.item() == mask.sum()


@pytest.mark.parametrize("dtype, tolerance", [("bfloat16", 2e-3), ("float16", 5e-4)])
def test_reduced_precision_curves_stay_within_a_stated_tolerance_of_float32(tmp_path, population, dtype, tolerance):
    """The same lines in bf16 / fp16 (the mix in fp32, rounded once): losses within `tolerance` nats of fp32 at
    every α and subset, accuracies within one example of 64 — and not identical, so the dtype took effect.
    (On the demo's finetuned models benchmarks/dtype_error.py measures the same: docs/performance.md.)"""
    curves = {}
    for dt in ("float32", dtype):
        p = plan.prepare(config.from_dict(sweep_config(population[:3], tmp_path / dt, alphas=5, dtype=dt)))
        local.run(p, progress=False)
        curves[dt] = Store(p.cfg.store).curves().to_table().to_pandas().sort_values(["model_a", "model_b", "alpha", "subset"])
    d_loss = (curves[dtype].loss.to_numpy() - curves["float32"].loss.to_numpy())
    d_acc = (curves[dtype].accuracy.to_numpy() - curves["float32"].accuracy.to_numpy())
    assert np.abs(d_loss).max() < tolerance and np.abs(d_acc).max() <= 1 / 64 + 1e-12
    assert np.abs(d_loss).max() > 0


def test_dtype_auto_is_float32_on_cpus_bfloat16_on_gpus_and_the_store_records_which(tmp_path, population):
    """auto is made concrete before the store opens: a CPU run's store is float32 (and resumes with an explicit
    float32, as stores from before auto do); a run on GPUs records bfloat16 and refuses to mix with float32."""
    import json

    def never(cfg):
        raise AssertionError("a concrete dtype needs no question about GPUs")

    def opened(name, on_gpus=plan.here_on_gpus, **over):
        p = plan.prepare(config.from_dict(sweep_config(population[:2], tmp_path / name, **over)), on_gpus)
        with Recorder(p):
            return p.cfg.dtype, json.loads((tmp_path / name / "run.json").read_text())["fingerprint"]["dtype"]

    assert opened("cpu") == ("float32", "float32")
    assert opened("cpu", never, dtype="float32") == ("float32", "float32")
    assert opened("gpu", lambda cfg: True) == ("bfloat16", "bfloat16")
    with pytest.raises(ConfigError, match="dtype"):
        opened("gpu", never, dtype="float32")
    # The Ray executor's answer: a pinned device decides without asking the cluster (device: cpu computes on
    # CPUs even where actors reserve GPUs, as the fake-GPU autoscaler test's do).
    from lmc_ray.execution import ray_sweep

    for device, want in (("cpu", False), ("cuda", True)):
        assert ray_sweep.on_gpus(config.from_dict(sweep_config(population[:2], tmp_path / "x", device=device))) is want
