"""The start of the shipped language-model example (docs/lm-example.md): a GPT-2 architecture and a byte-level BPE
tokenizer learned from the example's training texts, saved without weights. `finetune` with `init: random` trains it
from scratch into the example's base.

    python -m lmc_ray.training.lm_start results/lm/start
"""
from __future__ import annotations

import argparse
from pathlib import Path

# The example's three domains (../shared/data): the base learns MNLI's premises (five genres of written and spoken
# English), its adapters CoLA's linguistics examples or PAWS-QQP's Quora questions.
DATA = Path("../shared/data")  # from the project root, as the shipped configs read it
TEXTS = {"mnli": ("mnli/dev_matched.tsv", True, "premise"),
         "cola": ("cola/in_domain_train.tsv", False, "sentence"),
         "paws": ("paws_qqp/train.tsv", True, "sentence1")}
COLA_COLUMNS = ["source", "label", "original_mark", "sentence"]


def build_tokenizer(texts: list[str], vocab_size: int = 400):
    """A byte-level BPE tokenizer learned from `texts` (GPT-2's kind: no special tokens added to a text)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", unk_token="<|endoftext|>")


def gpt2_config(vocab_size: int, layers: int = 2, hidden: int = 32, heads: int = 2, positions: int = 128):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=positions,
                      bos_token_id=0, eos_token_id=0, architectures=["GPT2LMHeadModel"])


def texts(data: Path = DATA) -> list[str]:
    import pandas as pd

    out = []
    for path, header, column in TEXTS.values():
        df = pd.read_csv(data / path, sep="\t", quoting=3, header=0 if header else None,
                         names=None if header else COLA_COLUMNS)
        out += list(df[column].dropna().astype(str))
    return out


def write(out: str | Path, corpus: list[str], vocab_size: int = 2048, layers: int = 3, hidden: int = 96,
          heads: int = 4, positions: int = 256) -> Path:
    """config.json and the tokenizer under `out`, no weights: what `init: random` trains from."""
    out = Path(out)
    tok = build_tokenizer(corpus, vocab_size)
    gpt2_config(len(tok), layers, hidden, heads, positions).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to write the start to")
    p.add_argument("--data", default=str(DATA), help="the shared data folder (default: %(default)s)")
    args = p.parse_args(argv)
    print(write(args.out, texts(Path(args.data))))


if __name__ == "__main__":
    main()
