"""Causal LMs and LoRA adapters: stored curves against an independent computation of token-weighted next-token
loss along the merged lines, one base copy per process, and the refusals."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lmc_ray import config
from lmc_ray.compute import adapters
from lmc_ray.compute.residents import Residents
from lmc_ray.errors import ConfigError
from lmc_ray.execution import local, plan
from lmc_ray.storage.store import Store
from lmc_ray.testing.lm_population import make_adapters, make_lm_population

COLA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cola" / "in_domain_dev.tsv"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return list(pd.read_csv(COLA, sep="\t", header=None, quoting=3)[3])


@pytest.fixture(scope="module")
def text_set(tmp_path_factory, texts) -> Path:
    """CoLA sentences as a text set, with a subset column (its acceptability mark) and varied lengths."""
    path = tmp_path_factory.mktemp("text") / "cola.jsonl"
    df = pd.read_csv(COLA, sep="\t", header=None, quoting=3, names=["source", "label", "mark", "sentence"])
    df[["sentence", "label"]].head(48).astype({"label": str}).to_json(path, orient="records", lines=True)
    return path


@pytest.fixture(scope="module")
def lms(tmp_path_factory, texts) -> list[Path]:
    return make_lm_population(tmp_path_factory.mktemp("lms"), 3, texts, noise=0.05)


@pytest.fixture(scope="module")
def lora(tmp_path_factory, texts) -> tuple[Path, list[Path]]:
    """A base and three adapters of it: ranks 2, 4 and 8, the last also on the MLP's c_fc and the embedding."""
    root = tmp_path_factory.mktemp("lora")
    (base,) = make_lm_population(root, 0, texts)
    ads = make_adapters(base, root / "adapters", [2, 4, 8], [["c_attn"], ["c_attn", "c_proj"], ["c_attn", "c_fc", "wte"]])
    return base, ads


def lm_config(models, store, text_set, **over) -> config.SweepConfig:
    raw = {"models": [m if isinstance(m, dict) else str(m) for m in models], "store": str(store), "alphas": [0.0, 0.25, 0.5, 1.0],
           "cache_dir": str(Path(store).parent / "cache"),
           "eval_sets": [{"name": "cola", "path": str(text_set), "text": ["sentence"], "subsets": ["label"],
                          "max_examples": 40}]}
    raw.update(over)
    return config.from_dict(raw)


def reference(states: list[dict], template: Path, texts: list[str], tokenizer: Path) -> tuple[float, float]:
    """Token-weighted next-token CE and top-1 accuracy of a model with weights `states[0]`, one text at a time,
    no padding: Σ CE / Σ predicted tokens, as plain transformers computes it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(template)).eval()
    model.load_state_dict(states[0])
    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    ce = right = n = 0.0
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([tok(t)["input_ids"]])
            logits = model(input_ids=ids).logits[0, :-1].double()
            target = ids[0, 1:]
            ce += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
            right += float((logits.argmax(-1) == target).sum())
            n += len(target)
    return ce / n, right / n


def merged(base: Path, adapter: Path) -> dict:
    """The adapter merged into its base by PEFT itself (merge_and_unload)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(adapter))
    return {k: v.clone() for k, v in model.merge_and_unload().state_dict().items()}


def lerp(a: dict, b: dict, alpha: float) -> dict:
    return {k: (1 - alpha) * a[k] + alpha * b[k] if a[k].is_floating_point() else a[k] for k in a}


def stored(store: str) -> pd.DataFrame:
    return Store(store).curves().to_table().to_pandas()


def check_curves(rows: pd.DataFrame, states: list[dict], names: list[str], template: Path, texts: list[str],
                 tokenizer: Path, alphas: list[float]) -> None:
    rows = rows[rows.subset == "all"]
    for (i, a), (j, b) in [((0, names[0]), (1, names[1])), ((1, names[1]), (2, names[2]))]:
        line = rows[(rows.model_a == a) & (rows.model_b == b)].sort_values("alpha")
        assert list(line.alpha) == alphas
        want = np.array([reference([lerp(states[i], states[j], al)], template, texts, tokenizer) for al in alphas])
        np.testing.assert_allclose(line[["loss", "accuracy"]].to_numpy(), want, atol=1e-5, rtol=0)
        assert np.ptp(want[:, 0]) > 1e-3  # the models differ, so the comparison means something


def test_full_causal_lms_store_token_weighted_next_token_loss(tmp_path, lms, text_set):
    cfg = lm_config(lms, tmp_path / "store", text_set)
    p = plan.prepare(cfg)
    assert p.cfg.max_length == 128  # auto: every position the models have
    local.run(p, progress=False)
    texts = list(pd.read_json(text_set, lines=True).sentence[:40])
    from safetensors.torch import load_file

    states = [load_file(str(m / "model.safetensors")) for m in lms]
    for s in states:  # GPT-2's output layer is its embedding table, saved once
        s.setdefault("lm_head.weight", s["transformer.wte.weight"])
    check_curves(stored(p.cfg.store), states, [m.name for m in p.cfg.models], lms[0], texts, lms[0], cfg.alphas)
    rows = stored(p.cfg.store)
    assert set(rows.subset) == {"all", "label=0", "label=1"}
    assert rows.f1.isna().all() and rows.mcc.isna().all()


def test_lora_adapters_equal_the_line_between_the_merged_models(tmp_path, lora, text_set):
    base, ads = lora
    cfg = lm_config(ads, tmp_path / "store", text_set)
    p = plan.prepare(cfg)
    assert p.cfg.base == str(base) and p.base_revision.startswith("content:")
    local.run(p, progress=False)
    texts = list(pd.read_json(text_set, lines=True).sentence[:40])
    states = [merged(base, a) for a in ads]
    check_curves(stored(p.cfg.store), states, [m.name for m in p.cfg.models], base, texts, base, cfg.alphas)
    # The distance of a pair is that of the merged models.
    rows = stored(p.cfg.store)
    d = rows[(rows.model_a == p.cfg.models[0].name) & (rows.model_b == p.cfg.models[2].name)].distance.iloc[0]
    want = np.sqrt(sum(float((states[2][k] - states[0][k]).double().pow(2).sum()) for k in states[0]
                       if k != "lm_head.weight" and states[0][k].is_floating_point()))
    assert d == pytest.approx(want, rel=1e-5)



def test_planes_and_anchor_pairs_of_adapters_are_the_merged_models_mixes(tmp_path, lora, text_set):
    """A plane through three adapters is base + Σ c·ΔW (the three merged models' mix at each grid point), and
    `pairs: {anchors: …}` computes only the anchors' lines, the same values as a full sweep's."""
    base, ads = lora
    names = [str(a) for a in ads]
    p = plan.prepare(lm_config(ads, tmp_path / "store", text_set, pairs={"anchors": [names[1]]},
                               planes={"triples": [names], "grid": 3, "margin": 0.1}))
    local.run(p, progress=False)
    rows = stored(p.cfg.store)
    assert sorted({tuple(sorted(x)) for x in rows[["model_a", "model_b"]].to_numpy()}) == sorted(
        [tuple(sorted((names[0], names[1]))), tuple(sorted((names[1], names[2])))])
    full = plan.prepare(lm_config(ads, tmp_path / "all", text_set))
    local.run(full, progress=False)
    keys = ["model_a", "model_b", "alpha", "subset"]
    both = rows.merge(stored(full.cfg.store), on=keys, suffixes=("", "_all"))
    assert len(both) == len(rows)
    np.testing.assert_allclose(both.loss, both.loss_all, atol=1e-6, rtol=0)

    whole = Store(p.cfg.store).planes().to_table().to_pandas().query("subset == 'all'")
    point = whole[whole.vertex == ""].iloc[4]  # the centre of the 3 × 3 grid
    a, b, c = (merged(base, x) for x in ads)
    mix = {k: a[k] + point.s * (b[k] - a[k]) + point.t * (c[k] - a[k]) if a[k].is_floating_point() else a[k]
           for k in a}
    texts = list(pd.read_json(text_set, lines=True).sentence[:40])
    np.testing.assert_allclose([point.loss, point.accuracy], reference([mix], base, texts, base), atol=1e-5)
    assert whole.loss.max() - whole.loss.min() > 1e-3  # the plane is not flat: the comparison means something


def test_adapters_and_their_base_on_s3_sweep_as_from_folders(tmp_path, lora, text_set, s3_endpoint):
    """S3 is only transport for adapters too: adapters and a base on a real S3 server on loopback (`base:` naming
    the S3 copy) give the values of the same folders on disk, and each is pinned by its content."""
    import s3fs

    base, ads = lora
    fs = s3fs.S3FileSystem()
    fs.mkdir("lora")
    for name, folder in [("base", base), *((f"ad{k}", a) for k, a in enumerate(ads))]:
        for f in Path(folder).iterdir():
            fs.put_file(str(f), f"lora/{name}/{f.name}")
    remote = [f"s3://lora/ad{k}" for k in range(len(ads))]
    p = plan.prepare(lm_config(remote, tmp_path / "s3", text_set, base="s3://lora/base"))
    assert p.cfg.base == "s3://lora/base" and all(r.startswith("s3:") for r in [*p.revisions, p.base_revision])
    local.run(p, progress=False)
    want = plan.prepare(lm_config(ads, tmp_path / "disk", text_set))
    local.run(want, progress=False)
    names = {m.name: k for k, m in enumerate(p.cfg.models)}
    names.update({m.name: k for k, m in enumerate(want.cfg.models)})
    got, ref = (stored(s).assign(a=lambda d: d.model_a.map(names), b=lambda d: d.model_b.map(names))
                .sort_values(["a", "b", "alpha", "subset"]) for s in (p.cfg.store, want.cfg.store))
    assert len(got) == len(ref) > 0
    np.testing.assert_allclose(got.loss.to_numpy(), ref.loss.to_numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_llama_style_models_and_their_adapters_equal_the_merged_lines(tmp_path, text_set, texts, arch):
    """Beyond GPT-2: nn.Linear layers (no Conv1D transpose), grouped-query attention, an untied output layer,
    Qwen2's q/k/v biases; adapters of different ranks and targets, one with rsLoRA's scale."""
    lms = make_lm_population(tmp_path / "full", 3, texts, arch=arch, noise=0.1)
    (base,) = make_lm_population(tmp_path / "lora", 0, texts, arch=arch)
    ads = make_adapters(base, tmp_path / "lora" / "adapters", [2, 8],
                        [["q_proj", "k_proj", "o_proj", "down_proj"], ["v_proj", "gate_proj", "up_proj"]], scale=0.3)
    ads += make_adapters(base, tmp_path / "lora" / "rs", [4], [["q_proj", "up_proj"]], scale=0.3, seed=1, rslora=True)
    used = list(pd.read_json(text_set, lines=True).sentence[:40])
    from transformers import AutoModelForCausalLM

    for models, states, template in [
            (lms, [AutoModelForCausalLM.from_pretrained(m).state_dict() for m in lms], lms[0]),
            (ads, [merged(base, a) for a in ads], base)]:
        cfg = lm_config(models, tmp_path / f"store-{template.name}", text_set)
        p = plan.prepare(cfg)
        local.run(p, progress=False)
        check_curves(stored(p.cfg.store), states, [m.name for m in p.cfg.models], template, used, template,
                     cfg.alphas)

def test_adapters_are_held_as_factors_over_one_base(tmp_path, lora, text_set):
    base, ads = lora
    many = make_adapters(base, tmp_path / "many", [4] * 6)
    p = plan.prepare(lm_config(many, tmp_path / "store", text_set))
    res = Residents(p.cfg, list(range(len(many))), p.labels, p.datas, p.revisions, p.base_revision)
    base_bytes = sum(t.numel() * t.element_size() for t in res.base.values())
    factor_bytes = sum(adapters.inspect(m.name, Path(m.ref), {k: tuple(v.shape) for k, v in res.base.items()}).bytes
                       for m in p.cfg.models)
    assert res.resident_bytes() == base_bytes + factor_bytes
    # The memory plan (footprint.py) counts exactly what is held, and the working copy and logits beside it.
    assert res.footprint.resident == res.resident_bytes()
    unique = {t.data_ptr(): t.numel() * t.element_size() for t in res.core.working.model.state_dict().values()
              if t.is_floating_point()}  # GPT-2's output layer is its embedding table: one tensor
    assert res.footprint.working == sum(unique.values())
    assert res.footprint.logits == 3 * 4 * 2048 * res.core.working.model.config.vocab_size
    assert factor_bytes < 0.2 * base_bytes  # six adapters cost a fifth of one more base copy


def test_lm_sweep_analyses_into_basins_and_a_report(tmp_path, lms, text_set):
    from lmc_ray.analysis import findings, report

    p = plan.prepare(lm_config(lms, tmp_path / "store", text_set, alphas=5))
    local.run(p, progress=False)
    store = Store(p.cfg.store)
    a = findings.run(store, "cola")
    assert a.matrix.shape == (3, 3) and np.all(np.diag(a.matrix) == 0) and np.allclose(a.matrix, a.matrix.T)
    # The barrier of a pair is the paper's, on its whole curve: the stored interior with the two endpoints.
    from lmc_ray.analysis.barriers import paper

    rows = a.curves.query("subset == 'all'")
    line = rows[(rows.model_a == a.names[0]) & (rows.model_b == a.names[1])].sort_values("alpha")
    assert list(line.alpha) == [0, 0.25, 0.5, 0.75, 1]
    assert a.matrix[0, 1] == pytest.approx(paper(line.loss.to_numpy(), line.alpha.to_numpy()), abs=1e-12)
    assert a.matrix.max() > 1e-3
    assert sorted(np.bincount(a.labels("paper")).tolist()) == [1, 2]
    index = report.write(store, a)
    assert Path(index).is_file() and "cola" in Path(index).read_text()


# -- refusals, each one line before the store is written ------------------------------------------------------
def refused(cfg, match: str, tmp_path) -> None:
    with pytest.raises(ConfigError, match=match):
        plan.prepare(cfg)
    assert not (tmp_path / "store").exists()


def test_refusals(tmp_path, lms, lora, text_set, population):
    base, ads = lora
    ood = tmp_path / "other_base"
    make_lm_population(ood, 0, ["other words entirely"] * 10, hidden=16)
    other = make_adapters(ood / "base", tmp_path / "other_ads", [2])
    refused(lm_config([ads[0], other[0]], tmp_path / "store", text_set), "adapters of different bases", tmp_path)
    missing = tmp_path / "orphan"
    shutil.copytree(ads[0], missing)
    cfgfile = missing / "adapter_config.json"
    cfgfile.write_text(json.dumps({**json.loads(cfgfile.read_text()), "base_model_name_or_path": str(tmp_path / "gone")}))
    refused(lm_config([missing, ads[1]], tmp_path / "store", text_set, base=str(tmp_path / "gone")),
            "its base .* cannot be had", tmp_path)
    refused(lm_config([lms[0], population[0]], tmp_path / "store", text_set), "is a classifier .*all of one kind",
            tmp_path)
    refused(lm_config([lms[0], ads[0]], tmp_path / "store", text_set), "full checkpoint and .* a LoRA adapter", tmp_path)
    labelled = [{"name": "cola", "path": str(text_set), "text": ["sentence"], "label": "label"}]
    refused(lm_config(lms, tmp_path / "store", text_set, eval_sets=labelled), "causal LMs.*drop label", tmp_path)
    refused(lm_config(population[:2], tmp_path / "store", text_set), "has no label; the models are classifiers",
            tmp_path)
    long = tmp_path / "long.jsonl"
    pd.DataFrame({"sentence": [" ".join(["word"] * 400), "short text here"]}).to_json(long, orient="records", lines=True)
    plain = [{"name": "long", "path": str(long), "text": ["sentence"]}]
    refused(lm_config(lms, tmp_path / "store", long, eval_sets=plain), "longer than the models' 128 positions",
            tmp_path)
    cut = lm_config(lms, tmp_path / "cut" / "store", long, eval_sets=plain, max_length=64)
    assert max(len(x) for x in plan.prepare(cut).datas[0].input_ids) == 64  # asked: cut
    f1 = [{"name": "cola", "path": str(text_set), "text": ["sentence"], "metrics": ["accuracy", "f1"]}]
    refused(lm_config(lms, tmp_path / "store", text_set, eval_sets=f1), "f1 is a classification score", tmp_path)


def test_adapters_on_ray_actors_equal_the_in_process_sweep(tmp_path, lora, text_set, ray_local):
    """Two actors: each holds the base once and its adapters, and fetches its partners' factors from the other."""
    from lmc_ray.execution import ray_sweep

    base, ads = lora
    stores = {}
    for how in ("local", "ray"):
        p = plan.prepare(lm_config(ads, tmp_path / how / "store", text_set, actors=2, cpus_per_actor=1))
        (local.run if how == "local" else ray_sweep.run)(p, progress=False)
        stores[how] = stored(p.cfg.store).sort_values(["model_a", "model_b", "alpha", "subset"]).reset_index(drop=True)
    assert len(stores["ray"]) == 3 * 4 * 3  # 3 pairs, 4 α, 3 subsets
    np.testing.assert_allclose(stores["ray"][["loss", "accuracy", "distance"]].to_numpy(),
                               stores["local"][["loss", "accuracy", "distance"]].to_numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("edit, match", [({"use_dora": True}, "DoRA"), ({"modules_to_save": ["score"]}, "modules_to_save"),
                                         ({"bias": "lora_only"}, "trained biases")])
def test_adapters_this_cannot_mix_exactly_are_refused(tmp_path, lora, text_set, edit, match):
    base, ads = lora
    odd = tmp_path / "odd"
    shutil.copytree(ads[0], odd)
    cfgfile = odd / "adapter_config.json"
    cfgfile.write_text(json.dumps({**json.loads(cfgfile.read_text()), **edit}))
    refused(lm_config([ads[1], odd], tmp_path / "store", text_set), f"model '{odd}': a LoRA adapter with {match}",
            tmp_path)


def test_per_example_is_refused_on_causal_lms(tmp_path, lms, text_set):
    refused(lm_config(lms, tmp_path / "store", text_set, per_example=True), "per_example: .* token-weighted", tmp_path)


def test_export_writes_the_merged_point_of_an_adapter_line_and_of_a_causal_lm_line(tmp_path, lms, lora, text_set):
    """The exported checkpoint loads with plain transformers and scores what the sweep stored at that α."""
    from lmc_ray.analysis.export import export

    base, ads = lora
    texts = list(pd.read_json(text_set, lines=True).sentence[:40])
    for models, name in ((ads, "ads"), (lms, "lms")):
        p = plan.prepare(lm_config(models, tmp_path / name / "store", text_set))
        local.run(p, progress=False)
        a, b = p.cfg.models[0].name, p.cfg.models[1].name
        out = export(Store(p.cfg.store), a, b, 0.25, str(tmp_path / name / "point"))
        from safetensors.torch import load_file

        state = load_file(str(out / "model.safetensors"))
        state.setdefault("lm_head.weight", state["transformer.wte.weight"])
        rows = stored(p.cfg.store).query("subset == 'all' and alpha == 0.25")
        want = rows[(rows.model_a == a) & (rows.model_b == b)][["loss", "accuracy"]].to_numpy()[0]
        np.testing.assert_allclose(reference([state], out, texts, out), want, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def choice_set(tmp_path_factory, texts) -> Path:
    """A multiple-choice set from CoLA's sentences: the first half of a sentence, and as choices its own second
    half and other sentences' (three choices, or two in every fifth item). The answer is named by its index in
    some items and by its text in the others; a subset column splits them."""
    rows = []
    for i, t in enumerate(texts[:30]):
        words = t.split()
        cut = max(1, len(words) // 2)
        ends = [" ".join(texts[j].split()[cut:]) or "again" for j in (i, i + 7, i + 13)][: 2 if i % 5 == 0 else 3]
        ends[0] = " ".join(words[cut:]) or "again"
        order = np.random.default_rng(i).permutation(len(ends))
        choices = [ends[k] for k in order]
        right = int(np.flatnonzero(order == 0)[0])
        rows.append({"context": " ".join(words[:cut]), "choices": choices, "named": "index" if i % 2 else "text",
                     "answer": str(right) if i % 2 else choices[right]})
    path = tmp_path_factory.mktemp("mc") / "mc.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    return path


def choice_reference(state: dict, template: Path, path: Path) -> dict[str, tuple[float, float]]:
    """Per subset: mean over items of -log softmax(choices' log-likelihoods)[answer] and the share of items whose
    most likely choice is the answer, each choice scored alone by plain transformers: the log-probabilities of
    the tokens of `context + " " + choice` past those of `context`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(template)).eval()
    model.load_state_dict(state)
    tok = AutoTokenizer.from_pretrained(str(template))
    items = pd.read_json(path, lines=True, dtype=False)
    loss, right = [], []
    with torch.no_grad():
        for row in items.itertuples():
            start = len(tok(row.context)["input_ids"])
            ll = []
            for choice in row.choices:
                ids = torch.tensor([tok(f"{row.context} {choice}")["input_ids"]])
                logp = model(input_ids=ids).logits[0].double().log_softmax(-1)
                ll.append(sum(float(logp[p - 1, ids[0, p]]) for p in range(start, ids.shape[1])))
            answer = int(row.answer) if row.named == "index" else list(row.choices).index(row.answer)
            loss.append(-float(torch.tensor(ll).log_softmax(0)[answer]))
            right.append(float(int(np.argmax(ll)) == answer))
    loss, right, named = np.array(loss), np.array(right), items.named.to_numpy()
    out = {"all": (loss.mean(), right.mean())}
    for value in ("index", "text"):
        out[f"named={value}"] = (loss[named == value].mean(), right[named == value].mean())
    return out


def test_a_multiple_choice_set_scores_each_item_by_its_choices_likelihoods(tmp_path, lms, choice_set, text_set):
    """`choices:` on causal LMs: along a line, each subset's loss and accuracy equal an independent computation,
    one choice at a time without padding, on the merged weights; the sequences are batched by length as any set.
    Malformed items and configs are refused in one line before the store is written."""
    from safetensors.torch import load_file

    mc = {"name": "mc", "path": str(choice_set), "text": ["context"], "choices": "choices", "label": "answer",
          "subsets": ["named"]}
    raw = {"models": [str(m) for m in lms[:2]], "store": str(tmp_path / "store"), "alphas": [0.0, 0.5, 1.0],
           "cache_dir": str(tmp_path / "cache"), "eval_sets": [mc]}
    cfg = config.from_dict(raw)
    p = plan.prepare(cfg)
    local.run(p, progress=False)
    states = [load_file(str(m / "model.safetensors")) for m in lms[:2]]
    for s in states:
        s.setdefault("lm_head.weight", s["transformer.wte.weight"])
    rows = stored(p.cfg.store)
    for alpha in cfg.alphas:
        want = choice_reference(lerp(states[0], states[1], alpha), lms[0], choice_set)
        at = rows[rows.alpha == alpha]
        for subset, (loss, acc) in want.items():
            row = at[at.subset == subset]
            assert int(row.n_examples.iloc[0]) == (30 if subset == "all" else 15)
            assert row.loss.iloc[0] == pytest.approx(loss, abs=1e-5) and row.accuracy.iloc[0] == pytest.approx(acc)
    assert 0.0 < rows.accuracy.min() and rows.loss.max() > 0.1  # neither trivial nor constant

    bad = tmp_path / "bad.jsonl"
    rows_in = pd.read_json(choice_set, lines=True, dtype=False)
    for edit, match in (({"choices": ["only one"]}, "not a list of two or more non-empty choices"),
                        ({"answer": "a choice it lacks"}, "is neither an index of its")):
        broken = rows_in.copy()
        for key, value in edit.items():
            broken.at[3, key] = value
        broken.to_json(bad, orient="records", lines=True)
        with pytest.raises(ConfigError, match=match):
            plan.prepare(config.from_dict({**raw, "eval_sets": [{**mc, "path": str(bad)}], "store": str(tmp_path / "s2")}))
    for e, match in (({**mc, "metrics": ["mcc"]}, "mcc is a classification score; a multiple-choice set"),
                     ({k: v for k, v in mc.items() if k != "label"}, "a multiple-choice set has one text field")):
        with pytest.raises(ConfigError, match=match):
            plan.prepare(config.from_dict({**raw, "eval_sets": [e], "store": str(tmp_path / "s2")}))
    assert not (tmp_path / "s2").exists()


def test_export_as_an_adapter_is_the_merged_point_when_peft_merges_it(tmp_path, lms, lora, text_set):
    """`lmc-ray export --adapter`: the point as one PEFT adapter of the base, which PEFT itself loads and merges into
    the merged export's weights (ranks 4 and 8, targets that differ, an embedding among them); of a store of whole
    models it is refused in one line."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from lmc_ray import cli
    from lmc_ray.analysis.export import export

    base, ads = lora
    p = plan.prepare(lm_config(ads[1:], tmp_path / "ads" / "store", text_set, alphas=[0.0, 0.5, 1.0]))
    local.run(p, progress=False)
    a, b = (m.name for m in p.cfg.models)
    merged = export(Store(p.cfg.store), a, b, 0.3, str(tmp_path / "merged"))
    cli.export(["--store", p.cfg.store, "--pair", a, b, "--alpha", "0.3", "--out", str(tmp_path / "point"),
                "--adapter", "--cache-dir", str(tmp_path / "cache")])
    point = tmp_path / "point"
    written = json.loads((point / "adapter_config.json").read_text())
    assert written["r"] == written["lora_alpha"] == 4 + 8 and not (point / "model.safetensors").exists()
    assert {t.split(".")[-1] for t in written["target_modules"]} == {"c_attn", "c_proj", "c_fc", "wte"}
    model = AutoModelForCausalLM.from_pretrained(str(base))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    got = PeftModel.from_pretrained(model, str(point)).merge_and_unload().state_dict()
    want = load_file(str(merged / "model.safetensors"))
    moved = 0
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, atol=2e-6, rtol=0)
        moved += not torch.equal(value, start[key])
    assert moved >= 4 * 2 + 1  # every targeted weight of both layers, and the embedding

    q = plan.prepare(lm_config(lms[:2], tmp_path / "lms" / "store", text_set, alphas=[0.0, 0.5, 1.0]))
    local.run(q, progress=False)
    with pytest.raises(ConfigError, match="export --adapter: the store's models are whole checkpoints"):
        export(Store(q.cfg.store), *(m.name for m in q.cfg.models), 0.3, str(tmp_path / "no"), as_adapter=True)
    assert not (tmp_path / "no").exists()


def _on_hub(hub, repo: str, folder: Path, card: str) -> str:
    """`folder` committed as `repo` with a model card whose front matter names its base, as the hub reads it."""
    return hub.commit(repo, folder, "Upload", extra={"README.md": f"---\n{card}\n---\n".encode()})


def test_adapters_of_a_hub_base_are_listed_pinned_and_grown(tmp_path, lora, text_set, texts):
    """`models: {adapters_of: BASE}` through the loopback hub: the hub's plain LoRA adapters of that base, pinned
    to their commits; a DoRA one left out with a warning; a full finetune and another base's adapter not listed;
    values equal the same adapters swept from folders; a new adapter on the hub adds only its pairs. Finetunes of
    it are listed the same way, one of other shapes left out."""
    import subprocess
    import sys

    import yaml

    from lmc_ray.testing.hub import LocalHub

    base, ads = lora
    hub = LocalHub()
    try:
        _on_hub(hub, "lmcray/base", base, "library_name: transformers")
        copies = {}
        for k, src in enumerate([ads[0], ads[1], ads[0], ads[2]]):  # the third becomes DoRA, the fourth comes later
            copies[k] = tmp_path / f"hub_a{k}"
            shutil.copytree(src, copies[k])
            cfgfile = copies[k] / "adapter_config.json"
            cfgfile.write_text(json.dumps({**json.loads(cfgfile.read_text()), "base_model_name_or_path": "lmcray/base",
                                           **({"use_dora": True} if k == 2 else {})}))
            (copies[k] / "README.md").unlink(missing_ok=True)
        pins = {f"lmcray/a{k}": _on_hub(hub, f"lmcray/a{k}", copies[k], "base_model: lmcray/base\nlibrary_name: peft")
                for k in (0, 1, 2)}
        (full,) = make_lm_population(tmp_path / "ft", 1, texts)
        _on_hub(hub, "lmcray/finetune", full, "base_model: lmcray/base")
        (odd,) = make_lm_population(tmp_path / "odd", 1, ["a finetune of the base"] * 10, hidden=16)
        _on_hub(hub, "lmcray/smaller", odd, "base_model: lmcray/base\nbase_model_relation: finetune")
        _on_hub(hub, "lmcray/elsewhere", copies[1], "base_model: lmcray/other\nlibrary_name: peft")
        hub.downloads.update({"lmcray/a1": 30, "lmcray/a2": 20, "lmcray/a0": 10})

        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "hf"),
               "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        raw = {"models": {"adapters_of": "lmcray/base"}, "store": str(tmp_path / "store"),
               "alphas": [0.0, 0.5, 1.0], "cache_dir": str(tmp_path / "cache"),
               "eval_sets": [{"name": "cola", "path": str(text_set), "text": ["sentence"], "max_examples": 40}]}

        def sweep(cfg: dict, **over) -> subprocess.CompletedProcess:
            (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
            return subprocess.run([sys.executable, "-c", "import lmc_ray, sys; lmc_ray.sweep(sys.argv[1], "
                                   "executor='local', progress=False)", str(tmp_path / "cfg.yaml")],
                                  env={**env, **over}, capture_output=True, text=True, timeout=300)

        done = sweep(raw)
        assert done.returncode == 0, done.stderr
        assert "model 'lmcray/a2': a LoRA adapter with DoRA (use_dora); lmc-ray interpolates plain LoRA factors " \
               "only; left out of the sweep" in done.stderr
        run = json.loads((tmp_path / "store" / "run.json").read_text())
        assert run["weights"] == {n: f"hub:{pins[n]}" for n in ("lmcray/a1", "lmcray/a0")}  # most downloaded first
        assert run["fingerprint"]["base"] == "lmcray/base"
        first = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "store" / "curves").iterdir()}

        pins["lmcray/a3"] = _on_hub(hub, "lmcray/a3", copies[3], "base_model: lmcray/base")
        grown = sweep(raw)
        assert grown.returncode == 0, grown.stderr
        assert set(json.loads((tmp_path / "store" / "run.json").read_text())["weights"]) == {
            "lmcray/a0", "lmcray/a1", "lmcray/a3"}
        after = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "store" / "curves").iterdir()}
        assert {n: t for n, t in after.items() if n in first} == first  # the first pair's file untouched
        rows = stored(str(tmp_path / "store"))
        assert sorted(set(zip(rows.model_a, rows.model_b))) == [("lmcray/a0", "lmcray/a3"), ("lmcray/a1", "lmcray/a0"),
                                                                ("lmcray/a1", "lmcray/a3")]

        finetunes = sweep(raw | {"models": ["lmcray/base", {"finetunes_of": "lmcray/base"}],
                                 "store": str(tmp_path / "ft_store")})
        assert finetunes.returncode == 0, finetunes.stderr
        assert "model 'lmcray/smaller'" in finetunes.stderr and "left out of the sweep" in finetunes.stderr
        assert set(json.loads((tmp_path / "ft_store" / "run.json").read_text())["weights"]) == {
            "lmcray/base", "lmcray/finetune"}

        offline = sweep(raw | {"store": str(tmp_path / "off")}, HF_HUB_OFFLINE="1")
        assert offline.stderr.strip().splitlines()[-1].endswith(
            "models: adapters_of 'lmcray/base': listing the hub needs it online (HF_HUB_OFFLINE is set); list the "
            "models instead")
        empty = sweep(raw | {"models": [{"adapters_of": "lmcray/nobody"}], "store": str(tmp_path / "none")})
        assert empty.stderr.strip().splitlines()[-1].endswith(
            "config: models: adapters_of 'lmcray/nobody': the hub lists no adapters of it")
        assert not (tmp_path / "off").exists() and not (tmp_path / "none").exists()
    finally:
        hub.close()

    # The same adapters from folders, their base given: the same values.
    ref = lm_config([{"ref": str(copies[k]), "name": f"lmcray/a{k}"} for k in (1, 0, 3)], tmp_path / "ref", text_set,
                    alphas=[0.0, 0.5, 1.0], base=str(base))
    local.run(plan.prepare(ref), progress=False)
    key = ["model_a", "model_b", "alpha", "subset"]
    want = stored(str(tmp_path / "ref")).query("subset == 'all'").sort_values(key).reset_index(drop=True)
    got = rows.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(got[["loss", "accuracy", "distance"]].to_numpy(),
                               want[["loss", "accuracy", "distance"]].to_numpy(), atol=1e-6, rtol=0)
