"""The sweep's settings as typed classes: each field's type (with its choices and bounds) is checked when the object
is built, and the docstring under a field is its description (in --help, the JSON schema and docs/configuration.md).
"""
from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from .refs import same_ref

STORE_FORMAT = 3  # bumped when stored columns or files change: a store another version cannot read is refused
READABLE_FORMATS = (2, 3)  # 3 added merged batch files to 2's one file per result: a 2 store is read and grown
METRICS = ("accuracy", "f1", "mcc")  # the scores an eval set may report per model (compute/metrics.py)

# strict: YAML's "10" stays a string and its `true` is no 1; forbid: a typo'd key is refused, not ignored.
TYPED = ConfigDict(strict=True, extra="forbid", use_attribute_docstrings=True)
# Fields the loader fills from other keys (hub listings are written among `models:`): no YAML key, no flag.
DERIVED = ("listings",)
Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
PositiveNumber = Annotated[float, Field(gt=0)]
NonNegativeNumber = Annotated[float, Field(ge=0)]


@dataclass(config=TYPED)
class ModelSpec:
    ref: str
    """Local directory, hub id (org/name[@revision]) or s3://bucket/prefix."""
    name: str = ""
    """How the model is named in the store; default: its ref."""
    labels: Annotated[list[str], Field(min_length=2)] | None = None
    """The checkpoint's class names in id order, for checkpoints saved with generic LABEL_i names (label orders are
    matched by name, so they must be known)."""
    step: str | None = None
    """The training step this checkpoint was saved at, for populations swept at several steps (set by `steps:`)."""

    def __post_init__(self):
        self.ref = same_ref(self.ref)
        self.name = self.name or self.ref


@dataclass(config=TYPED)
class HubListSpec:
    adapters_of: str | None = None
    """Hub id of a base model: the hub's LoRA adapters of it (the models tagged base_model:adapter:BASE, which the
    hub derives from each model card's base_model). Their base is then this one unless `base` says otherwise."""
    finetunes_of: str | None = None
    """Hub id of a base model: the hub's full finetunes of it (tagged base_model:finetune:BASE)."""
    limit: Positive = 50
    """At most this many, the first in `sort` order."""
    sort: Literal["downloads", "likes", "created_at", "last_modified", "trending_score"] = "downloads"
    """The hub's order, most first."""
    exclude: list[str] = field(default_factory=list)
    """Hub ids left out of the listing."""

    @property
    def base(self) -> str:
        return self.adapters_of or self.finetunes_of or ""

    @property
    def relation(self) -> str:
        """The hub's word for how the listed models derive from the base (its tag base_model:RELATION:BASE)."""
        return "adapter" if self.adapters_of else "finetune"

    @property
    def key(self) -> str:
        return f"{self.relation}s_of"


@dataclass(config=TYPED)
class EvalSetSpec:
    name: str
    """How the set is named in the store and the report."""
    path: str
    """Local file (jsonl/csv/tsv/parquet) or a hub dataset id."""
    text: list[str]
    """The text field, or two for sentence pairs (a text set for causal LMs has one)."""
    label: str | None = None
    """The field holding each example's label (a name, or a class id), for classifiers; of a multiple-choice set,
    the right choice (its index, or its text). None: a text set, scored on causal LMs by next-token prediction
    (loss: token-weighted mean cross-entropy; accuracy: top-1 next token)."""
    choices: str | None = None
    """Multiple choice, for causal LMs: the field holding each item's candidate continuations (a list, or a JSON
    list in text). `text` is the context and `label` the answer. Each choice is scored by the summed log-likelihood
    of its tokens after the context and a space, as lm-evaluation-harness scores `acc`. loss: the cross-entropy of
    the answer under the softmax of the choices' log-likelihoods, averaged over items; accuracy: the share of items
    whose most likely choice is the answer."""
    subsets: list[str | list[str]] = field(default_factory=list)
    """Each entry is a field or a list of fields; scores are also reported per value (combination)."""
    label_map: dict[Any, str | list[str]] | None = None
    """Raw label value -> model label name, or a list of names whose logits are pooled by max (how a 3-way NLI model
    is scored on 2-way HANS)."""
    max_examples: Positive | None = 512
    """The first K rows, as the paper; null = all."""
    split: str = "validation"
    """Hub datasets only."""
    subset_config: str | None = None
    """Hub dataset configuration name (e.g. "mnli")."""
    revision: str | None = None
    """Hub datasets only: a branch, tag or commit. datasets 4+ runs no loading scripts, so a script dataset (HANS) is
    read from its parquet conversion, revision "refs/convert/parquet"."""
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    """Hub datasets only: files of the repository to read (as datasets.load_dataset's data_files), e.g. a parquet
    conversion's "plain_text/validation/*.parquet"."""
    format: str | None = None
    """Override of the file-extension guess."""
    role: Literal["in_domain", "diagnostic"] = "in_domain"
    """How the cluster report uses the set."""
    columns: list[str] | None = None
    """Names for a header-less csv/tsv (e.g. CoLA's raw files)."""
    balance_by: str | None = None
    """Take the first max_examples rows round-robin over this field's values, so a file sorted by subcase (HANS:
    1,000 rows of each of 30) still gives every subcase its share."""
    filter: dict[str, str | list[str]] | None = None
    """Keep only the rows whose field has this value (or one of these values), before any other selection: the
    paper's HANS set is {heuristic: lexical_overlap, label: non-entailment}."""
    shuffle_seed: int | None = None
    """Then permute the rows as datasets.Dataset.shuffle(seed=...) does (the same rows come out in the same order)
    and take the first max_examples: the paper's HANS selection is shuffle(seed=42), first 512."""
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    """Reported per model: accuracy, f1, mcc."""
    endpoints_only: bool = False
    """Evaluated once per model, never along the lines: whole diagnostic sets (HANS's 30,000 rows) for the
    per-cluster scores, at N evaluations instead of N(N-1)/2 x 8."""

    def subset_fields(self) -> list[list[str]]:
        return [[s] if isinstance(s, str) else list(s) for s in self.subsets]


@dataclass(config=TYPED)
class PlanesSpec:
    triples: list[Annotated[list[str], Field(min_length=3, max_length=3)]]
    """Each three model names [A, B, C]: the plane θ_A + s(θ_B − θ_A) + t(θ_C − θ_A) through them."""
    grid: Annotated[int, Field(ge=2)] = 11
    """Points per axis of the grid (true distances, Gram–Schmidt axes, as the paper draws its planes)."""
    margin: NonNegativeNumber = 0.2
    """How far the grid reaches beyond the triangle, as a fraction of its width and height."""


@dataclass(config=TYPED)
class SweepConfig:
    models: list[ModelSpec]
    """The population: model references (strings) or mappings with ref, name, labels, steps; all one architecture.
    A mapping {adapters_of: BASE} or {finetunes_of: BASE} lists models from the hub instead (see `listings`)."""
    eval_sets: list[EvalSetSpec]
    """The sets each model is scored on; the first is on every line and decides the barriers by default."""
    store: str
    """Output store: a local path or s3://bucket/prefix."""
    alphas: list[float] = field(default_factory=lambda: grid(10))
    """Points on each line: a count of evenly spaced points with both models included (10, the paper's; 3 to
    1000), or a list of α in [0, 1] such as [0, 0.5, 1]."""
    pairs: str | dict[str, Any] = "all"
    """Which pairs get a line: all (the paper's N(N−1)/2), {anchors: [model names]} (every model against each
    anchor), or {file: PATH} (two model names a line). `analyse` needs all for basins."""
    across_steps: bool = False
    """With models at several training steps (`steps:`), also the pairs between steps (default: within each)."""
    planes: PlanesSpec | None = None
    """Planes through three models, evaluated on the line sets after the pairs (STORE/planes/, contour plots in the
    report); null = none."""
    refine: NonNegative = 0
    """Adaptive α: refinement rounds, each evaluating the two midpoints either side of the curve's highest point
    above its endpoint chord (first eval set's loss). 0 = the paper's fixed grid."""
    per_example: bool = False
    """Keep every example's loss and correctness at every α (STORE/examples/), so `analyse` can put a
    bootstrap confidence interval on each barrier."""
    dtype: Literal["auto", "float32", "bfloat16", "float16", "tfloat32"] = "auto"
    """auto: bfloat16 where the sweep runs on GPUs, float32 on CPUs (core.GPU_DTYPE says why); made concrete before
    the store is opened, so a store records the precision its values were computed in. tfloat32: fp32 weights with
    TF32 matmuls, GPUs only."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where each actor computes; auto = its node's GPU if it has one, else its CPUs."""
    batch_tokens: Literal["auto"] | Positive = "auto"
    """Tokens per batch: padded tokens (dynamic padding, length-sorted), or with packing the longest stream; auto:
    core.BATCH_TOKENS for the device, packed core.PACKED_TOKENS."""
    max_batch_size: Positive = 256
    """Most examples in one padded batch, whatever the token budget allows."""
    packing: Literal["auto"] | bool = "auto"
    """Padding-free evaluation (lmc_ray/compute/packed.py): auto = on GPUs for BERT-family encoders; true fails on others.
    Changes no value beyond float rounding, so stores resume across it."""
    max_length: Literal["auto"] | Positive = "auto"
    """Tokens kept per example (truncation only; never padded to); auto = 512 or the models' positions if fewer.
    More than the models' positions is refused."""
    actors: Literal["auto"] | Positive = "auto"
    """Number of actors; auto = as many as the population and the cluster's largest size allow (what the autoscaler
    may add counts, not only what runs now): one per gpus_per_actor GPUs, or per cpus_per_actor cores."""
    gpus_per_actor: Literal["auto"] | NonNegativeNumber = "auto"
    """GPUs each actor asks Ray for: 1, or 1/k to share a GPU among k actors; auto = 1 when the sweep runs on GPUs
    (device cuda, or auto on a cluster that has or can add GPUs), 1/k when there are more actors than GPUs, else 0.
    Asking is what makes an autoscaler start GPU workers."""
    cpus_per_actor: Positive = 2
    """Threads per actor on CPUs (docs/performance.md measures 1 and 2)."""
    resource_timeout: PositiveNumber = 900.0
    """Seconds to wait for the actors' resources (an autoscaler starting nodes) before giving up in one line."""
    max_in_flight: Positive = 2
    """Pair tasks queued per actor."""
    max_retries: NonNegative = 3
    """Actor restarts / task retries before a model is declared broken."""
    lease_timeout: PositiveNumber = 120.0
    """Seconds without a heartbeat after which another sweep may take over an S3 store's lease (lmc_ray/storage/lease.py)."""
    cache_dir: str = "~/.cache/lmc_ray"
    """Where models read from S3, and converted checkpoints, are cached; hub files go to huggingface_hub's own cache
    (HF_HUB_CACHE, else HF_HOME/hub), shared with the user's other tools."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for s3:// paths."""
    tokenizer: str | None = None
    """Model reference to take the tokenizer from; default: the first model (for LoRA adapters, the adapter's
    folder if it has tokenizer files, else the base)."""
    base: str | None = None
    """For a population of LoRA adapters: the model reference of the base they were trained on; default: their
    adapter_config.json's base_model_name_or_path (which must then be the same for all)."""
    listings: list[HubListSpec] = field(default_factory=list)
    """The `models:` entries that list the hub, {adapters_of: BASE} or {finetunes_of: BASE}: made into models when
    the sweep is planned, each pinned to the commit the hub has then (a later run with more of them on the hub grows
    the store by their pairs). Listed models that cannot be swept (other adapter kinds, other shapes, gated) are
    left out with a warning naming each."""
    ood: str | None = None
    """The per-model score the report's paper figures order the models by (the OOD heatmap, Figure 1, the
    spectral-score scatter), as SET/SUBSET/METRIC: e.g. hans_full/heuristic,label=lexical_overlap,non-entailment/
    accuracy, the paper's HANS headline. Recorded in run.json, not part of the store's identity; `analyse --ood`
    overrides it. Default: the first diagnostic set's whole-set score."""

    def fingerprint(self) -> dict:
        """The settings that decide the stored values; a store refuses a run whose fingerprint differs."""
        return {
            "models": [dataclasses.asdict(m) for m in self.models],
            # Eval-set keys added after stores existed enter only when set, so those stores still resume.
            "eval_sets": [{k: v for k, v in dataclasses.asdict(e).items() if k not in _LATER or v != _LATER[k]}
                          for e in self.eval_sets],
            "alphas": self.alphas,
            # Only when used, so stores written before adaptive α existed stay resumable.
            **({"refine": self.refine} if self.refine else {}),
            **({"per_example": True} if self.per_example else {}),
            **({"pairs": self.pairs} if self.pairs != "all" else {}),
            "dtype": self.dtype,
            "max_length": self.max_length,
            "tokenizer": self.tokenizer,
            **({"base": self.base} if self.base else {}),
            # Before the plan lists the hub; its run records the listed models instead.
            **({"listings": [dataclasses.asdict(x) for x in self.listings]} if self.listings else {}),
            "format": STORE_FORMAT,
        }


_LATER = {"filter": None, "shuffle_seed": None, "revision": None, "data_files": None, "endpoints_only": False}


# Each point is a forward pass of every pair over the eval sets: 1,000 is 100× the paper's grid.
MAX_ALPHAS = 1000


def grid(n: int) -> list[float]:
    """n evenly spaced points on [0, 1], endpoints included (the paper's grid for n = 10)."""
    return [i / (n - 1) for i in range(n)]


def on_line(eval_sets) -> list[int]:
    """The eval sets evaluated along the lines, by index (the others, endpoints_only, once per model). Takes the
    specs or run.json's dicts of them, so a sweep and the analysis of its store read the rule from one place."""
    only = [e.get("endpoints_only", False) if isinstance(e, dict) else e.endpoints_only for e in eval_sets]
    return [k for k, skip in enumerate(only) if not skip]
