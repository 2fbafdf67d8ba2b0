import pandas as pd

from lmc_ray.training import toynli


def _bow_accuracy(df: pd.DataFrame) -> float:
    pred = [toynli.bag_of_words(p, h) for p, h in zip(df.premise, df.hypothesis)]
    return float((pd.Series(pred, index=df.index) == df.label).mean())


def test_generation_is_deterministic_and_seeded():
    a, b, c = toynli.generate(seed=3), toynli.generate(seed=3), toynli.generate(seed=4)
    for split in ("train", "validation", "diagnostic"):
        pd.testing.assert_frame_equal(a[split], b[split])
    assert not a["train"].equals(c["train"])


def test_labels_are_balanced():
    d = toynli.generate()
    for split in ("train", "validation", "diagnostic"):
        share = (d[split].label == "entailment").mean()
        assert 0.45 <= share <= 0.55, (split, share)


def test_bag_of_words_fits_in_domain_but_fails_the_diagnostic_non_entailment_half():
    d = toynli.generate(swap_rate=0.02)
    assert _bow_accuracy(d["train"]) > 0.97
    assert _bow_accuracy(d["validation"]) > 0.97
    diag = d["diagnostic"]
    assert (diag.heuristic == "lexical_overlap").all()
    assert all(set(h.split()) <= set(p.split()) for p, h in zip(diag.premise, diag.hypothesis))  # full overlap
    assert _bow_accuracy(diag[diag.label == "non-entailment"]) == 0.0
    assert _bow_accuracy(diag[diag.label == "entailment"]) == 1.0
    assert set(diag.subcase) == {"ln_subject/object_swap", "ln_preposition", "ln_relative_clause",
                                 "le_adjective", "le_preposition", "le_relative_clause"}


def test_swaps_are_rare_in_training():
    train = toynli.generate(swap_rate=0.02)["train"]
    assert 0.01 < (train.case == "swap").mean() < 0.03
