"""A built-in NLI task that reproduces the paper's situation in miniature, generated from a seed.

Two strategies fit the training set: a bag-of-words rule ("every hypothesis word is in the premise ⇒
entailment") and one that respects word order. They disagree only on high-overlap non-entailment
(subject/object swaps and the like), which is rare in training, as it is in MNLI. The diagnostic split is
HANS-style: every example has full lexical overlap, labelled by heuristic and subcase, half of it
non-entailment, where the bag-of-words rule scores 0%.
"""
from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

NOUNS = ["doctor", "lawyer", "artist", "senator", "student", "banker", "actor", "author", "manager", "judge",
         "tourist", "secretary", "athlete", "professor", "president", "scientist", "farmer", "pilot", "chef",
         "dancer", "singer", "teacher", "writer", "baker"]
VERBS = ["saw", "helped", "called", "paid", "thanked", "met", "admired", "avoided", "believed", "encouraged",
         "recommended", "introduced", "contacted", "supported", "visited", "mentioned", "advised", "followed"]
ADJS = ["tall", "old", "young", "quiet", "famous", "happy", "busy", "clever", "shy", "proud"]
PREPS = ["near", "behind", "beside"]
LABELS = ["entailment", "non-entailment"]


class _Gen:
    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def nouns(self, k):
        return self.r.sample(NOUNS, k)

    def verb(self, avoid=()):
        return self.r.choice([v for v in VERBS if v not in avoid])

    def adj(self):
        return self.r.choice(ADJS)

    def premise(self):
        """A clause with an optional modifier: adjective, prepositional phrase or relative clause."""
        n1, n2, n3 = self.nouns(3)
        v, v2 = self.verb(), self.verb()
        kind = self.r.choice(["plain", "adjective", "preposition", "relative"])
        subj = {"plain": f"{n1}", "adjective": f"{self.adj()} {n1}",
                "preposition": f"{n1} {self.r.choice(PREPS)} {n3}",
                "relative": f"{n1} who {v2} {n3}"}[kind]
        return kind, f"{subj} {v} {n2}", (n1, v, n2, n3, v2)


def _train_like(g: _Gen, n: int, swap_rate: float) -> list[dict]:
    """In-domain examples; high-overlap non-entailment (swaps) appear at `swap_rate`."""
    rows = []
    for _ in range(n):
        kind, p, (n1, v, n2, n3, v2) = g.premise()
        u = g.r.random()
        if u < swap_rate:
            h, lab, case = f"{n2} {v} {n1}", "non-entailment", "swap"
        elif u < swap_rate + (1 - swap_rate) / 2:
            h, lab, case = f"{n1} {v} {n2}", "entailment", "core_clause"
        elif g.r.random() < 0.5:
            h, lab, case = f"{n1} {g.verb(avoid=(v, v2))} {n2}", "non-entailment", "other_verb"
        else:
            m1, m2 = g.r.sample([x for x in NOUNS if x not in (n1, n2, n3)], 2)
            h, lab, case = f"{m1} {v} {m2}", "non-entailment", "other_people"
        rows.append({"premise": p, "hypothesis": h, "label": lab, "case": case, "premise_kind": kind})
    return rows


def _diagnostic(g: _Gen, per_subcase: int) -> list[dict]:
    """HANS-style: every hypothesis word occurs in the premise; the label depends on structure."""
    rows = []
    for _ in range(per_subcase):
        n1, n2, n3 = g.nouns(3)
        v, v2, a = g.verb(), g.verb(), g.adj()
        prep = g.r.choice(PREPS)
        cases = [
            ("ln_subject/object_swap", f"{n1} {v} {n2}", f"{n2} {v} {n1}", "non-entailment"),
            ("ln_preposition", f"{n1} {prep} {n3} {v} {n2}", f"{n3} {v} {n2}", "non-entailment"),
            ("ln_relative_clause", f"{n1} who {v2} {n3} {v} {n2}", f"{n3} {v} {n2}", "non-entailment"),
            ("le_adjective", f"{a} {n1} {v} {n2}", f"{n1} {v} {n2}", "entailment"),
            ("le_preposition", f"{n1} {prep} {n3} {v} {n2}", f"{n1} {v} {n2}", "entailment"),
            ("le_relative_clause", f"{n1} who {v2} {n3} {v} {n2}", f"{n1} {v} {n2}", "entailment"),
        ]
        for sub, p, h, lab in cases:
            rows.append({"premise": p, "hypothesis": h, "label": lab, "heuristic": "lexical_overlap", "subcase": sub})
    g.r.shuffle(rows)
    return rows


def generate(seed: int = 0, n_train: int = 6000, n_val: int = 1000, per_subcase: int = 200,
             swap_rate: float = 0.02) -> dict[str, pd.DataFrame]:
    """train / validation (drawn like train) / diagnostic splits, deterministic in `seed`."""
    return {
        "train": pd.DataFrame(_train_like(_Gen(seed), n_train, swap_rate)),
        "validation": pd.DataFrame(_train_like(_Gen(seed + 1), n_val, swap_rate)),
        "diagnostic": pd.DataFrame(_diagnostic(_Gen(seed + 2), per_subcase)),
    }


def write(out_dir: str | Path, **kwargs) -> dict[str, Path]:
    """The splits as jsonl files (what configs point at)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in generate(**kwargs).items():
        paths[name] = out / f"{name}.jsonl"
        tmp = paths[name].with_suffix(".part")
        df.to_json(tmp, orient="records", lines=True)
        tmp.replace(paths[name])
    return paths


def bag_of_words(premise: str, hypothesis: str) -> str:
    """The heuristic: entailment iff every hypothesis word occurs in the premise."""
    return "entailment" if set(hypothesis.split()) <= set(premise.split()) else "non-entailment"
