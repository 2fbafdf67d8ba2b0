"""How a model is referred to: a local directory, a hub id (org/name[@revision], org/name@step:N), s3://bucket/prefix
or pkg://package/folder; ranges such as org/bert_{0..99}; where a checkpoint saved at a training step lives.

Decided from the string alone (and whether a local directory of that name exists): compute/sources.py fetches.
"""
from __future__ import annotations

import os
import re

# A git ref cannot hold ':', so @step:N never names a branch or tag.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@([\w./-]+|step:\d+))?$")
RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def kind(ref: str) -> str:
    if ref.startswith("s3://"):
        return "s3"
    if ref.startswith("pkg://"):
        return "pkg"
    if os.path.isdir(os.path.expanduser(ref)) or not hub_id(ref):
        return "local"
    return "hub"


def hub_id(ref: str) -> bool:
    """Whether `ref` can name a hub repository (org/name[@revision]); ./x, ../x, /x and ~/x never do."""
    return not ref.startswith((".", "/", "~")) and bool(HUB_ID.match(ref))


def same_ref(ref: str) -> str:
    """One spelling per model: `m0`, `m0/` and `./m0` name the same directory (and `s3://b/m0/` the same prefix)."""
    scheme, sep, rest = ref.rpartition("://")
    return f"{scheme}{sep}{rest.rstrip('/')}" if sep else os.path.normpath(ref)


def expand(ref: str) -> list[str]:
    """`org/bert_{0..99}` -> 100 refs; several ranges multiply out."""
    m = RANGE.search(ref)
    if not m:
        return [ref]
    lo, hi = int(m.group(1)), int(m.group(2))
    width = len(m.group(1)) if m.group(1).startswith("0") and len(m.group(1)) > 1 else 0
    out = []
    for i in range(lo, hi + 1):
        out += expand(ref[: m.start()] + str(i).zfill(width) + ref[m.end():])
    return out


def at_step(ref: str, step: int) -> str:
    """Where the checkpoint saved at `step` of the model at `ref` lives: on the hub, a commit of its history
    (compute/sources.py finds it); elsewhere the folder REF-stepS beside REF, where finetuning's save_steps
    writes it."""
    return f"{ref}@step:{step}" if kind(ref) == "hub" else f"{ref}-step{step}"
