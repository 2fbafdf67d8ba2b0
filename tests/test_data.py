import json

import numpy as np
import pytest

from lmc_ray.config import ConfigError, EvalSetSpec
from lmc_ray.compute.data import prepare, read_table
from lmc_ray.execution.plan import load_tokenizer

from conftest import DATA, MNLI, NLI_LABELS


@pytest.fixture(scope="module")
def tokenizer(population):
    return load_tokenizer(population[0])


def _spec(path, **over):
    spec = dict(name="nli", path=str(path), text=["premise", "hypothesis"], label="gold_label", max_examples=50)
    spec.update(over)
    return EvalSetSpec(**spec)


def test_every_file_format_reads_the_same_rows(tmp_path):
    df = read_table(_spec(MNLI))
    assert len(df) == 50 and df.premise[0].startswith("The new rights are nice enough")
    df = df[["premise", "hypothesis", "gold_label"]]
    df.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.csv", "d.parquet"):
        other = read_table(_spec(tmp_path / name))
        assert list(other.premise) == list(df.premise), name
        assert list(other.gold_label) == list(df.gold_label), name


def test_batches_pad_only_to_their_longest_and_cover_every_example(tokenizer):
    data = prepare(_spec(MNLI, max_examples=200), tokenizer, NLI_LABELS)
    batches = data.batches(batch_tokens=1024, max_batch_size=64)
    seen = np.concatenate([b["index"].numpy() for b in batches])
    assert sorted(seen) == list(range(200))
    lengths = np.array([len(x) for x in data.input_ids])
    padded = 0
    for b in batches:
        width = b["input_ids"].shape[1]
        assert width == lengths[b["index"].numpy()].max()  # dynamic padding, never to 512
        assert b["input_ids"].numel() <= max(1024, width)
        padded += b["input_ids"].numel()
    assert padded < 1.3 * lengths.sum()  # length sorting keeps padding small
    assert padded < 200 * 512 / 5


def test_labels_map_by_name_and_subsets_count(tokenizer):
    data = prepare(_spec(MNLI, subsets=["gold_label"]), tokenizer, ["contradiction", "entailment", "neutral"])
    df = read_table(_spec(MNLI))
    order = ["contradiction", "entailment", "neutral"]
    assert list(data.labels) == [order.index(v) for v in df.gold_label]
    assert data.subsets[0] == "all"
    for k, sub in enumerate(data.subsets[1:], 1):
        assert data.membership[k].sum() == (df.gold_label == sub.split("=")[1]).sum()


def test_hans_pools_non_entailment(tokenizer):
    path = DATA / "hans" / "heuristics_evaluation_set.regenerated.tsv"
    spec = EvalSetSpec(name="hans", path=str(path), text=["sentence1", "sentence2"], label="gold_label",
                       label_map={"entailment": "entailment", "non-entailment": ["neutral", "contradiction"]},
                       subsets=[["heuristic", "gold_label"]], max_examples=30)
    data = prepare(spec, tokenizer, NLI_LABELS)
    assert data.classes == [[0], [1, 2]] and data.pooled()
    assert set(data.labels) <= {0, 1}


@pytest.mark.parametrize("over, culprit", [
    ({"text": ["premise", "hypotesis"]}, "eval set 'nli': no column 'hypotesis'"),
    ({"label": "gold"}, "eval set 'nli': no column 'gold'"),
    ({"path": "/nowhere/dev.tsv"}, "eval set 'nli': no such file '/nowhere/dev.tsv'"),
    ({"label_map": {"entailment": "entailment"}}, "label value 'contradiction' is not in label_map"),
    ({"label_map": {"entailment": "yes", "neutral": "neutral", "contradiction": "contradiction"}},
     "eval set 'nli': label 'yes' is not a model label (models have: entailment, neutral, contradiction)"),
])
def test_bad_eval_sets_name_the_culprit(tokenizer, over, culprit):
    over = dict(over)
    with pytest.raises(ConfigError) as e:
        prepare(_spec(over.pop("path", MNLI), **over), tokenizer, NLI_LABELS)
    assert culprit in str(e.value)


def test_empty_and_label_less_sets(tmp_path, tokenizer):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ConfigError, match="eval set 'nli': .*empty.jsonl"):
        prepare(_spec(tmp_path / "empty.jsonl"), tokenizer, NLI_LABELS)
    (tmp_path / "header.tsv").write_text("premise\thypothesis\tgold_label\n")
    with pytest.raises(ConfigError, match="eval set 'nli': no examples"):
        prepare(_spec(tmp_path / "header.tsv"), tokenizer, NLI_LABELS)
    rows = [{"premise": "a", "hypothesis": "b", "gold_label": ""}]
    (tmp_path / "nolabel.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ConfigError, match="eval set 'nli': column 'gold_label' has empty labels"):
        prepare(_spec(tmp_path / "nolabel.jsonl"), tokenizer, NLI_LABELS)
    rows = [{"premise": "a", "hypothesis": "b", "gold_label": "neutral"},
            {"premise": None, "hypothesis": "b", "gold_label": "neutral"}]
    (tmp_path / "notext.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ConfigError, match=r"^eval set 'nli': column 'premise' has no text in 1 rows \(the first: "
                                          r"row 1 of the selection\); drop or fill them$"):
        prepare(_spec(tmp_path / "notext.jsonl"), tokenizer, NLI_LABELS)


def test_offline_hub_dataset_fails_in_one_line(tokenizer):
    with pytest.raises(ConfigError, match="eval set 'nli': not a local file and not loadable from the hub"):
        prepare(_spec("nyu-mll/glue", subset_config="mnli", split="validation_matched"), tokenizer, NLI_LABELS)


def test_a_datasets_builder_with_data_files_filtered_and_shuffled_as_datasets_does(tmp_path):
    """`path` names a datasets builder (here the parquet one, offline) and `data_files` what it reads; filter and
    shuffle_seed then give the rows datasets' own filter + shuffle(seed) give."""
    import datasets
    import pandas as pd

    whole = pd.read_csv(MNLI, sep="\t", quoting=3, dtype=str, keep_default_na=False, nrows=400)
    whole.to_parquet(tmp_path / "part.parquet")
    spec = _spec("parquet", data_files=str(tmp_path / "part.parquet"), split="train", max_examples=20,
                 filter={"gold_label": ["neutral", "contradiction"]}, shuffle_seed=7)
    got = read_table(spec)
    ref = (datasets.Dataset.from_pandas(whole).filter(lambda e: e["gold_label"] in ("neutral", "contradiction"))
           .shuffle(seed=7).select(range(20)))
    assert list(got["index"]) == ref["index"] and len(set(got.gold_label)) == 2
