"""Evaluation sets: read once, tokenize once, batch by length with dynamic padding.

The paper padded every example to 512 tokens; MNLI pairs average ~40 tokens, so most of its compute
multiplied padding. Here examples are sorted by length and cut into batches under a padded-token budget.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..config import FILE_FORMATS, EvalSetSpec
from ..errors import ConfigError, cause, first_line

def read_table(spec: EvalSetSpec, storage_options: dict | None = None):
    """The rows of the set as a DataFrame: the first max_examples rows, as the paper took them.

    `path` is a local file, a remote file (s3://, https://, ... through fsspec) or a hub dataset id.
    """
    import fsspec
    import pandas as pd

    where = f"eval set {spec.name!r}"
    remote = "://" in spec.path
    path = spec.path if remote else os.path.expanduser(spec.path)
    fmt = spec.format or FILE_FORMATS.get(os.path.splitext(path)[1].lower())
    # Filtering, shuffling and balancing need every row to choose from; otherwise only the first K rows are read.
    nrows = spec.max_examples if _first_rows(spec) else None
    if remote or os.path.exists(path) or fmt:
        if not remote and not os.path.isfile(path):
            raise ConfigError(f"{where}: no such file {spec.path!r}")
        if fmt is None:
            raise ConfigError(f"{where}: cannot tell the format of {spec.path!r} (set format: jsonl|csv|tsv|parquet)")
        if fmt not in ("jsonl", "csv", "tsv", "parquet"):
            raise ConfigError(f"{where}: unknown format {fmt!r} (jsonl|csv|tsv|parquet)")
        try:
            with fsspec.open(path, "rb", **(storage_options or {})) as f:
                if fmt == "jsonl":
                    df = pd.read_json(f, lines=True, nrows=nrows)
                elif fmt == "parquet":
                    df = pd.read_parquet(f)
                else:
                    # GLUE-style TSVs contain bare quotes inside sentences: never treat quotes specially there.
                    header = dict(header=None, names=spec.columns) if spec.columns else {}
                    df = pd.read_csv(f, sep="\t" if fmt == "tsv" else ",", nrows=nrows, dtype=str, **header,
                                     keep_default_na=False, quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
        except Exception as e:
            raise ConfigError(f"{where}: cannot read {spec.path!r} ({cause(e)})") from None
    else:
        df = _from_hub(spec)
    for field, wanted in (spec.filter or {}).items():
        if field not in df.columns:
            raise ConfigError(f"{where}: no column {field!r} (filter) in {spec.path!r}")
        df = df[df[field].astype(str).isin([wanted] if isinstance(wanted, str) else wanted)]
    if spec.shuffle_seed is not None:
        df = df.iloc[np.random.default_rng(spec.shuffle_seed).permutation(len(df))]  # datasets' own shuffle
    if spec.balance_by is not None:
        if spec.balance_by not in df.columns:
            raise ConfigError(f"{where}: no column {spec.balance_by!r} (balance_by) in {spec.path!r}")
        # Row k of every group before row k+1 of any: a stable sort on the rank within the group.
        rank = df.groupby(spec.balance_by, sort=False).cumcount()
        df = df.loc[rank.sort_values(kind="stable").index]
    if spec.max_examples is not None:
        df = df.iloc[: spec.max_examples]
    if len(df) == 0:
        raise ConfigError(f"{where}: no examples in {spec.path!r}")
    needed = list(spec.text) + [c for c in (spec.label, spec.choices) if c is not None] + [
        f for fields in spec.subset_fields() for f in fields]
    for col in needed:
        if col not in df.columns:
            raise ConfigError(f"{where}: no column {col!r} in {spec.path!r} (columns: {', '.join(map(str, df.columns))})")
    return df.reset_index(drop=True)


def _first_rows(spec: EvalSetSpec) -> bool:
    """Whether the set is simply the first max_examples rows of its file."""
    return spec.balance_by is None and not spec.filter and spec.shuffle_seed is None


def _from_hub(spec: EvalSetSpec):
    import datasets

    # A split already sliced ("validation[527:]", CoLA's out-of-domain rows) is cut after loading.
    whole = spec.max_examples is None or not _first_rows(spec) or "[" in spec.split
    split = spec.split if whole else f"{spec.split}[:{spec.max_examples}]"
    try:
        ds = datasets.load_dataset(spec.path, spec.subset_config, split=split, revision=spec.revision,
                                   data_files=spec.data_files)
    except Exception as e:
        msg = first_line(e)
        raise ConfigError(f"eval set {spec.name!r}: not a local file and not loadable from the hub ({msg})") from None
    df = ds.to_pandas()
    # Hub datasets store labels as ClassLabel ids: turn them back into names, so mapping is by name.
    feature = ds.features.get(spec.label) if spec.label is not None else None
    if hasattr(feature, "names"):
        df[spec.label] = [feature.names[i] if i >= 0 else str(i) for i in df[spec.label]]
    return df


@dataclass
class EvalData:
    """A tokenized evaluation set; plain numpy so it travels through Ray's object store without copies."""

    name: str
    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    labels: np.ndarray | None  # class index in `classes`; None: a text set (next-token prediction)
    classes: list[list[int]]  # eval class -> canonical model labels whose logits are pooled (max)
    subsets: list[str]  # "all" first
    membership: np.ndarray  # [n_subsets, n_examples] float32 0/1
    pad_id: int
    # Multiple choice: input_ids holds one sequence per (item, choice), context + " " + choice; labels, membership
    # and the examples counted are the items.
    choice: np.ndarray | None = None  # [n_sequences, 2]: each sequence's item and its choice's place in the item
    context: np.ndarray | None = None  # [n_sequences]: its leading tokens that are context, not scored

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_tokens(self) -> int:
        return int(sum(len(x) for x in self.input_ids))

    def pooled(self) -> bool:
        return any(len(c) != 1 for c in self.classes) or [c[0] for c in self.classes] != list(range(len(self.classes)))

    def pad(self, idx: np.ndarray, device: torch.device | str = "cpu") -> dict:
        """Examples `idx` as one batch padded to its own longest member."""
        lengths = [len(self.input_ids[i]) for i in idx]
        width = max(lengths)
        ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        types = np.zeros((len(idx), width), dtype=np.int64) if self.token_type_ids is not None else None
        for r, (i, n) in enumerate(zip(idx, lengths)):
            ids[r, :n] = self.input_ids[i]
            mask[r, :n] = 1
            if types is not None:
                types[r, :n] = self.token_type_ids[i]
        batch = {"input_ids": ids, "attention_mask": mask, "index": np.asarray(idx, dtype=np.int64)}
        if types is not None:
            batch["token_type_ids"] = types
        return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}

    def batches(self, batch_tokens: int, max_batch_size: int, device: torch.device | str = "cpu") -> list[dict]:
        """Length-sorted batches under a padded-token budget, each padded only to its own longest example."""
        lengths = np.array([len(x) for x in self.input_ids])
        order = np.argsort(-lengths, kind="stable")
        out, start = [], 0
        while start < len(order):
            size = max(1, min(max_batch_size, batch_tokens // lengths[order[start]]))
            out.append(self.pad(order[start: start + size], device))
            start += size
        return out


def _label_classes(spec: EvalSetSpec, raw: list[str], canonical: list[str]) -> tuple[np.ndarray, list[list[int]]]:
    """Map raw label values to eval classes by label name; a class may pool several model labels."""
    where = f"eval set {spec.name!r}"
    lower = [c.lower() for c in canonical]
    table = {str(k): v for k, v in (spec.label_map or {}).items()}

    def targets(value: str) -> tuple[int, ...]:
        if table:
            if value not in table:
                raise ConfigError(f"{where}: label value {value!r} is not in label_map (keys: {', '.join(table)})")
            names = table[value]
        else:
            names = value
        names = [names] if not isinstance(names, list) else names
        out = []
        for n in names:
            n = str(n)
            if n.lower() in lower:
                out.append(lower.index(n.lower()))
            elif n.lstrip("-").isdigit() and 0 <= int(n) < len(canonical):
                out.append(int(n))  # integer labels are class ids when the names don't match
            else:
                raise ConfigError(f"{where}: label {n!r} is not a model label (models have: {', '.join(canonical)})")
        return tuple(sorted(out))

    mapped = {v: targets(v) for v in sorted(set(raw))}
    # With a label_map the classes are all its targets, seen in the first K rows or not.
    groups = sorted({targets(v) for v in table} if table else set(mapped.values()))
    if all(len(g) == 1 for g in groups):
        groups = [(i,) for i in range(len(canonical))]  # no pooling: evaluate in the models' own label space
    classes = [list(g) for g in groups]
    labels = np.array([groups.index(mapped[v]) for v in raw], dtype=np.int64)
    return labels, classes


def prepare(spec: EvalSetSpec, tokenizer, canonical_labels: list[str], max_length: int = 512,
            storage_options: dict | None = None, truncate: bool = True) -> EvalData:
    """The set read and tokenized for models with `canonical_labels` (none: causal LMs, and `spec` a text set).
    Texts are cut at max_length; with `truncate` false a longer one is refused instead (max_length is then the
    models' positions, and a perplexity is not computed on a cut text unasked)."""
    where = f"eval set {spec.name!r}"
    if canonical_labels and spec.choices is not None:
        raise ConfigError(f"{where}: multiple choice (choices: {spec.choices!r}) is scored by a causal LM's "
                          "likelihoods; the models are classifiers")
    if not canonical_labels and spec.label is not None and spec.choices is None:
        raise ConfigError(f"{where}: has a label ({spec.label!r}) but the models are causal LMs, which score a text "
                          "set by next-token prediction; drop label (or name the choices, for multiple choice)")
    if canonical_labels and spec.label is None:
        raise ConfigError(f"{where}: has no label; the models are classifiers (text sets without labels are for "
                          "causal LMs)")
    df = read_table(spec, storage_options)
    if spec.choices is not None:
        return _multiple_choice(spec, df, tokenizer, max_length, truncate)
    if spec.label is None:
        labels, classes = None, []
    else:
        raw = [str(v).strip() for v in df[spec.label]]
        if any(v in ("", "nan", "None") for v in raw):
            raise ConfigError(f"{where}: column {spec.label!r} has empty labels")
        labels, classes = _label_classes(spec, raw, canonical_labels)
    for c in spec.text:  # a missing text would be scored as the word "None" or "nan"
        missing = df[c].isna().to_numpy().nonzero()[0]
        if len(missing):
            raise ConfigError(f"{where}: column {c!r} has no text in {len(missing)} rows (the first: row "
                              f"{missing[0]} of the selection); drop or fill them")
    texts = [[str(t) for t in df[c]] for c in spec.text]
    enc = tokenizer(*texts, truncation=truncate, max_length=max_length if truncate else None)
    ids = [np.asarray(x, dtype=np.int32) for x in enc["input_ids"]]
    longest = max(len(x) for x in ids)
    if longest > max_length:
        over = sum(len(x) > max_length for x in ids)
        raise ConfigError(f"{where}: {over} texts are longer than the models' {max_length} positions (the longest "
                          f"{longest} tokens); set max_length {max_length} or less to cut them")
    if labels is None and longest < 2:
        raise ConfigError(f"{where}: no text has two tokens, so there is no next token to predict")
    types = [np.asarray(x, dtype=np.int8) for x in enc["token_type_ids"]] if "token_type_ids" in enc else None
    return EvalData(spec.name, ids, types, labels, classes, *_subsets(spec, df), _pad_id(tokenizer))


def _subsets(spec: EvalSetSpec, df) -> tuple[list[str], np.ndarray]:
    """The subsets' names ("all" first) and which rows each holds."""
    subsets, rows = ["all"], [np.ones(len(df), dtype=np.float32)]
    for fields in spec.subset_fields():
        keys = df[fields].astype(str).agg(",".join, axis=1) if len(fields) > 1 else df[fields[0]].astype(str)
        prefix = ",".join(fields)
        for value in sorted(set(keys)):
            subsets.append(f"{prefix}={value}")
            rows.append((keys == value).to_numpy(dtype=np.float32))
    return subsets, np.stack(rows)


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _choice_list(where: str, column: str, value, row: int) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) < 2 or any(
            not isinstance(c, str) or not c.strip() for c in value):
        raise ConfigError(f"{where}: column {column!r}, row {row} of the selection: not a list of two or more "
                          "non-empty choices")
    return [str(c) for c in value]


def _answer(where: str, column: str, value, choices: list[str], row: int) -> int:
    """The right choice's place: an index into the choices, or a choice's own text."""
    text = str(value).strip()
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(choices):
        return int(text)
    if text in choices:
        return choices.index(text)
    raise ConfigError(f"{where}: column {column!r}, row {row} of the selection: {text!r} is neither an index of its "
                      f"{len(choices)} choices nor one of them")


def _multiple_choice(spec: EvalSetSpec, df, tokenizer, max_length: int, truncate: bool) -> EvalData:
    """One sequence per (item, choice): the context, a space and the choice, tokenized whole; the choice's tokens
    are those past the context's own tokenization (lm-evaluation-harness's split). A sequence longer than
    max_length loses context from the left, as the harness cuts it (refused with `truncate` false)."""
    where = f"eval set {spec.name!r}"
    contexts = [str(t) for t in df[spec.text[0]]]
    items = [_choice_list(where, spec.choices, v, r) for r, v in enumerate(df[spec.choices])]
    answers = np.array([_answer(where, spec.label, v, c, r) for r, (v, c) in enumerate(zip(df[spec.label], items))],
                       dtype=np.int64)
    own = [len(x) for x in tokenizer(contexts)["input_ids"]]
    whole = tokenizer([f"{c} {ch}" for c, chs in zip(contexts, items) for ch in chs])["input_ids"]
    choice = np.array([(i, k) for i, chs in enumerate(items) for k in range(len(chs))], dtype=np.int64)
    ids, context = [], []
    for (i, k), seq in zip(choice, whole):
        cut = max(0, len(seq) - max_length)
        if cut and not truncate:
            raise ConfigError(f"{where}: item {i}, choice {k}: {len(seq)} tokens, more than the models' {max_length} "
                              f"positions; set max_length {max_length} or less to cut its context")
        n = own[i] - cut
        if len(seq) <= own[i]:
            raise ConfigError(f"{where}: item {i}, choice {k}: {items[i][k]!r} adds no token to its context")
        if n < 1:
            raise ConfigError(f"{where}: item {i}, choice {k}: no context token precedes the choice (an empty "
                              "context, or a choice longer than max_length); its first token cannot be scored")
        ids.append(np.asarray(seq[cut:], dtype=np.int32))
        context.append(n)
    return EvalData(spec.name, ids, None, answers, [], *_subsets(spec, df), _pad_id(tokenizer), choice,
                    np.array(context, dtype=np.int64))
