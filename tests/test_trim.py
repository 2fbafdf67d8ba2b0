"""The first-token-only last layer against the untouched model, on padded batches of real MNLI text."""
import pytest
import torch

from lmc_ray.training.pretrain import build_tokenizer
from lmc_ray.compute.trim import first_token_only

from conftest import NLI_LABELS


def _classifier(kind: str, vocab: int, attn: str):
    from transformers import (BertConfig, BertForSequenceClassification, DistilBertConfig,
                              DistilBertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification)

    common = dict(vocab_size=vocab, num_labels=len(NLI_LABELS), attn_implementation=attn)
    if kind == "distilbert":
        return DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                                    **common))
    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **common)
    if kind == "roberta":
        return RobertaForSequenceClassification(RobertaConfig(pad_token_id=0, **size))
    return BertForSequenceClassification(BertConfig(**size))


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logits_equal_the_full_model(kind, attn, mnli_texts):
    tok = build_tokenizer(mnli_texts, 1500)
    torch.manual_seed(0)
    model = _classifier(kind, len(tok), attn).eval()
    # Pairs of very different lengths in one batch, so padding and the mask matter.
    enc = tok(mnli_texts[:16], mnli_texts[3000:3016], padding=True, return_tensors="pt")
    enc.pop("token_type_ids") if kind == "roberta" else None
    assert (enc["attention_mask"] == 0).any()
    with torch.no_grad():
        want = model(**enc).logits
        assert first_token_only(model)
        got = model(**enc).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert want.std() > 1e-3  # a real signal, not a constant output


def test_other_architectures_and_training_mode_are_left_alone(mnli_texts):
    model = _classifier("distilbert", 1500, "sdpa").eval()
    assert not first_token_only(model)
    bert = _classifier("bert", 1500, "sdpa").train()
    assert not first_token_only(bert)
