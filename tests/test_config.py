import os

import pytest

from lmc_ray import config
from lmc_ray.config import ConfigError

from conftest import ROOT


def _raw(**over):
    raw = {"models": ["a/m0", "a/m1"], "eval_sets": [{"name": "nli", "path": "x.jsonl", "text": ["p", "h"],
                                                      "label": "label"}], "store": "out"}
    raw.update(over)
    return raw


def test_minimal_form_defaults_to_the_papers_grid():
    cfg = config.from_dict(_raw())
    assert cfg.alphas == [i / 9 for i in range(10)]
    assert [m.name for m in cfg.models] == ["a/m0", "a/m1"]
    assert cfg.eval_sets[0].max_examples == 512
    # The paper's fixed grid fingerprints as before adaptive α existed: older stores stay resumable.
    assert cfg.refine == 0 and "refine" not in cfg.fingerprint()


def test_ranges_expand_in_order():
    cfg = config.from_dict(_raw(models=["org/bert_{0..2}", {"ref": "s3://b/m{7..8}", "name": "s3_{7..8}"}]))
    assert [m.ref for m in cfg.models] == ["org/bert_0", "org/bert_1", "org/bert_2", "s3://b/m7", "s3://b/m8"]
    assert [m.name for m in cfg.models][-2:] == ["s3_7", "s3_8"]


def test_explicit_alphas_are_sorted():
    assert config.from_dict(_raw(alphas=[1, 0, 0.5])).alphas == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("over, culprit", [
    ({"alphas": [0, 1.5]}, "alpha 1.5 is outside [0, 1]"),
    ({"alphas": [-0.1, 1]}, "alpha -0.1 is outside [0, 1]"),
    ({"alphas": 1}, "at least 3 points"),
    ({"alphas": 2}, "alphas = 2: a barrier needs at least 3 points"),
    ({"models": ["a/m0"]}, "at least 2 models"),
    ({"models": ["a/m0", "a/m0"]}, "'a/m0' appears twice"),
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"dtype": "int8"}, "dtype must be 'auto' or 'float32' or 'bfloat16' or 'float16' or 'tfloat32', got 'int8'"),
    ({"device": "tpu"}, "device must be 'auto' or 'cpu' or 'cuda', got 'tpu'"),
    ({"eval_sets": [{"name": "s", "path": "x", "text": "a", "label": "l", "role": "ood"}]},
     "eval set 's': role must be 'in_domain' or 'diagnostic', got 'ood'"),
    ({"refine": -1}, "refine must be a non-negative integer, got -1"),
    ({"refine": 1, "alphas": [0.2, 0.5, 0.8]}, "refine needs alphas with both endpoints and at least one interior point"),
    ({"batch_tokens": "many"}, "batch_tokens must be 'auto' or a positive integer, got 'many'"),
    ({"max_batch_size": 0}, "max_batch_size must be a positive integer, got 0"),
    ({"per_example": "yes"}, "per_example must be true or false, got 'yes'"),
    ({"eval_sets": [{"name": "s", "path": "x", "text": ["a", "b", "c"], "label": "l"}]}, "one or two fields"),
    ({"eval_sets": [{"name": "s", "path": "x", "text": "a", "label": "l", "colour": 1}]}, "unknown key 'colour'"),
    # Every key's type, before anything is written (these gave tracebacks, two after writing run.json).
    ({"alphas": []}, "alphas []: a barrier needs at least 3 points"),
    ({"alphas": [0.5]}, "alphas [0.5]: a barrier needs at least 3 points"),
    ({"alphas": [0, 1]}, "alphas [0.0, 1.0]: a barrier needs at least 3 points, one of them between"),
    ({"alphas": [0, 0.5, 0.5]}, "duplicate"),
    ({"alphas": "x"}, "alphas must be a number of grid points or a list of numbers, got 'x'"),
    ({"max_retries": "x"}, "max_retries must be a non-negative integer, got 'x'"),
    ({"max_retries": -1}, "max_retries must be a non-negative integer, got -1"),
    ({"store": 123}, "store must be a string, got 123"),
    ({"storage_options": "x"}, "storage_options must be a mapping, got 'x'"),
    ({"eval_sets": [{"name": "s", "path": 123, "text": "a", "label": "l"}]}, "eval set 's': path must be a string, got 123"),
    ({"eval_sets": [{"name": "s", "path": "x", "text": "a", "label": ["x"]}]}, "label must be a string or null, got ['x']"),
    ({"eval_sets": [{"name": "s", "path": "x", "text": "a", "label": "l", "subsets": 5}]}, "subsets must be a list"),
    ({"eval_sets": [{"name": "s", "path": "x", "text": "a", "label": "l", "max_examples": "ten"}]},
     "max_examples must be a positive integer or null, got 'ten'"),
    ({"models": [{"ref": 5}, "a/m1"]}, "ref must be a string, got 5"),
    # Hub listings: one base, a hub id, known keys; the YAML writes them among the models.
    ({"models": {"adapters_of": "org/base", "finetunes_of": "org/base"}}, "give one of adapters_of or finetunes_of"),
    ({"models": [{"adapters_of": "org/base@main"}]}, "adapters_of 'org/base@main' is not a hub repository id"),
    ({"models": [{"adapters_of": "./base"}]}, "adapters_of './base' is not a hub repository id"),
    ({"models": [{"adapters_of": "org/base", "limit": 0}]}, "limit must be a positive integer, got 0"),
    ({"models": [{"adapters_of": "org/base", "sort": "stars"}]}, "sort must be 'downloads' or"),
    ({"listings": []}, "unknown key 'listings' (hub listings are written under models: {adapters_of: BASE})"),
    ({"models": [{"adapters_of": "org/base"}], "planes": {"triples": [["x", "x", "y"]]}}, "three different models"),
    # One model under two spellings is one model.
    ({"models": ["m0", "m0/"]}, "model name 'm0' appears twice"),
    ({"models": [{"ref": "m0", "name": "a"}, {"ref": "./m0/", "name": "b"}]}, "/m0' appears twice (as 'a' and 'b')"),
    ({"models": ["s3://b/m0", "s3://b/m0/"]}, "model name 's3://b/m0' appears twice"),
    ({"eval_sets": [{"name": "s", "path": "x", "text": "a", "label": "l", "endpoints_only": True}]},
     "eval set 's': the first eval set is on the lines"),
    ({"gpus_per_actor": "many"}, "gpus_per_actor must be 'auto' or a non-negative number, got 'many'"),
    ({"resource_timeout": 0}, "resource_timeout must be a positive number, got 0"),
    ({"actors": 0}, "actors must be 'auto' or a positive integer, got 0"),
    ({"max_retries": True}, "max_retries must be a non-negative integer, got True"),
    ({"refine": "2"}, "refine must be a non-negative integer, got '2'"),  # strict: YAML's quoted "2" is a string
    ({"models": [{"ref": "m{0..1}", "labels": ["only"]}]}, "labels must be a list of (a string) of at least 2"),
    ({"models": [{"ref": "m{0..1}", "lables": ["a", "b"]}]}, "unknown key 'lables' (known: labels, name, ref, steps)"),
    ({"pairs": "some"}, "pairs must be 'all', {anchors: [names]} or {file: PATH}, got 'some'"),
    ({"pairs": {"anchors": ["a/m9"]}}, "pairs anchors: 'a/m9' is not a model name"),
])
def test_bad_config_names_the_culprit(over, culprit):
    with pytest.raises(ConfigError, match=None) as e:
        config.from_dict(_raw(**over))
    assert culprit in str(e.value)
    assert "\n" not in str(e.value)


def test_eval_set_keys_added_later_enter_the_fingerprint_only_when_set():
    """Stores written before filter / shuffle_seed / revision / endpoints_only existed still resume."""
    plain = config.from_dict(_raw()).fingerprint()["eval_sets"][0]
    assert not {"filter", "shuffle_seed", "revision", "endpoints_only"} & set(plain)
    raw = _raw()
    raw["eval_sets"][0].update(filter={"h": "x"}, shuffle_seed=42)
    assert config.from_dict(raw).fingerprint()["eval_sets"][0]["shuffle_seed"] == 42


def test_flags_override_the_file(tmp_path):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_raw()))
    args = config.parser("t").parse_args(["--config", str(path), "--store", "elsewhere", "--alphas", "[0, 0.5, 1]",
                                          "--max-examples", "7", "--set", "batch_tokens=123", "--refine", "2",
                                          "--per-example"])
    cfg = config.load(args)
    assert (cfg.store, cfg.alphas, cfg.eval_sets[0].max_examples, cfg.batch_tokens, cfg.refine, cfg.per_example) == \
        (os.path.abspath("elsewhere"), [0, 0.5, 1], 7, 123, 2, True)  # a flag: from the working dir
    # Settings added after stores existed enter the fingerprint only when used, so those stores still resume.
    assert cfg.fingerprint()["per_example"] is True
    assert "per_example" not in config.load(config.parser("t").parse_args(["--config", str(path)])).fingerprint()


def test_set_reaches_nested_keys(tmp_path):
    """--set with dots: into a mapping (created if absent), into an eval set by name or by position; a path that
    leads nowhere is one line."""
    import yaml

    raw = _raw()
    raw["eval_sets"].append(dict(raw["eval_sets"][0], name="second"))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))

    def load(*sets):
        return config.load(config.parser("t").parse_args(["--config", str(path), *[a for s in sets for a in ("--set", s)]]))

    cfg = load("storage_options.endpoint_url=http://127.0.0.1:9000", "eval_sets.second.max_examples=5",
               "eval_sets.0.max_examples=3")
    assert cfg.storage_options == {"endpoint_url": "http://127.0.0.1:9000"}
    assert [e.max_examples for e in cfg.eval_sets] == [3, 5]
    with pytest.raises(ConfigError, match=r"^--set eval_sets.third.max_examples: no 'eval_sets.third'"):
        load("eval_sets.third.max_examples=1")
    with pytest.raises(ConfigError, match=r"^--set store.x: 'store' is not a mapping$"):
        load("store.x=1")


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(config.parser("t").parse_args(["--config", str(tmp_path / "nope.yaml")]))


def test_the_shipped_json_schema_is_current_and_checks_what_the_loader_checks():
    """configs/sweep.schema.json is what config.schema() generates now; the shipped sweep configs pass it, and a
    typo'd key or a value outside its choices fails it, as they fail the loader."""
    import json

    import jsonschema
    import yaml

    from lmc_ray.config import CONFIGS, schema

    shipped = json.loads((CONFIGS / "sweep.schema.json").read_text())
    assert shipped == schema(), "regenerate: lmc-ray configs --schema > lmc_ray/configs/sweep.schema.json"
    check = jsonschema.Draft202012Validator(shipped)
    for name in ("mnli", "qqp", "cola", "example"):
        raw = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
        assert not list(check.iter_errors(raw)), name
        config.from_dict(raw)  # the loader agrees
    raw = yaml.safe_load((CONFIGS / "mnli.yaml").read_text())
    for bad in ({"dtyp": "float32"}, {"dtype": "int8"}, {"packing": "yes"}):
        assert list(check.iter_errors(raw | bad)), bad
        with pytest.raises(ConfigError):
            config.from_dict(raw | bad)


def test_every_setting_is_a_flag_described_by_its_field(tmp_path):
    """Flags come from SweepConfig's fields: each non-structure field has one, its help the field's docstring and
    type, and its value goes through the same typed check as the YAML's."""
    import dataclasses

    import yaml

    from lmc_ray.config.sweep import DERIVED

    help_text = config.parser("t").format_help()
    for f in dataclasses.fields(config.SweepConfig):
        if f.name not in ("models", "eval_sets", "storage_options", "planes", *DERIVED):
            assert f"--{f.name.replace('_', '-')}" in help_text, f.name
    flat = "".join(help_text.split())  # argparse wraps lines, at hyphens too
    schema = config.schema()["properties"]
    for f in dataclasses.fields(config.SweepConfig):  # each described, in --help and in the JSON schema
        if f.name in DERIVED:
            continue
        text = "".join((config.SweepConfig.__pydantic_fields__[f.name].description or "").split())
        assert text and text in "".join(schema[f.name].get("description", "").split()), f.name
        if f.name not in ("models", "eval_sets", "storage_options", "planes"):
            assert text in flat, f.name
    from lmc_ray.training.finetune import FinetuneConfig, LoraSpec

    for cls in (config.ModelSpec, config.HubListSpec, config.EvalSetSpec, config.PlanesSpec, FinetuneConfig, LoraSpec):  # entries, finetuning
        for name, info in cls.__pydantic_fields__.items():
            assert info.description, f"{cls.__name__}.{name}"
    assert "(anon-negativeinteger;default:3)" in flat and "(astring)" in flat  # max_retries; store: required
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_raw(per_example=True)))
    parse = lambda *a: config.load(config.parser("t").parse_args(["--config", str(path), *a]))
    cfg = parse("--packing", "false", "--max-retries", "5", "--per-example", "false", "--lease-timeout", "30",
                "--pairs", "{anchors: [a/m0]}", "--store", "123")
    assert (cfg.packing, cfg.max_retries, cfg.per_example, cfg.lease_timeout, cfg.pairs, cfg.store) == \
        (False, 5, False, 30, {"anchors": ["a/m0"]}, os.path.abspath("123"))
    with pytest.raises(ConfigError, match=r"^config: max_in_flight must be a positive integer, got 0$"):
        parse("--max-in-flight", "0")


@pytest.mark.parametrize("ood, culprit", [
    ("nli", "give SET/SUBSET/METRIC with SET an eval set (nli)"),
    ("hans/all/accuracy", "give SET/SUBSET/METRIC with SET an eval set (nli)"),
    ("nli/all/mcc", "eval set 'nli' reports accuracy, not 'mcc'"),
    ("nli/genre=fiction/accuracy", "subset 'genre=fiction' is not 'all' nor FIELDS=VALUES of one of eval set 'nli''s "
                                   "subsets (gold_label)"),
])
def test_an_ood_score_the_sweep_will_not_have_is_refused(ood, culprit):
    raw = _raw()
    raw["eval_sets"][0]["subsets"] = ["gold_label"]
    assert config.from_dict({**raw, "ood": "nli/gold_label=entailment/accuracy"}).ood
    with pytest.raises(ConfigError) as e:
        config.from_dict({**raw, "ood": ood})
    assert str(e.value) == f"config: ood {ood!r}: {culprit}"


def test_the_configuration_reference_in_docs_is_current_and_describes_every_field():
    import dataclasses

    from lmc_ray.cli import reference
    from lmc_ray.training.finetune import FinetuneConfig, LoraSpec

    text = reference()
    assert (ROOT / "docs" / "configuration.md").read_text() == text, \
        "regenerate: lmc-ray configs --reference > docs/configuration.md"
    sections = text.split("\n## ")[1:]
    from lmc_ray.config.sweep import DERIVED

    classes = (config.SweepConfig, config.ModelSpec, config.HubListSpec, config.EvalSetSpec, config.PlanesSpec,
               FinetuneConfig, LoraSpec)
    assert len(sections) == len(classes)
    for cls, section in zip(classes, sections):
        rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
        assert [r[0][3:-1] for r in rows] == [f.name for f in dataclasses.fields(cls) if f.name not in DERIVED], \
            cls.__name__
        assert all(r[3].strip(" |") for r in rows), cls.__name__
    assert "| `max_retries` | a non-negative integer | `3` | Actor restarts / task retries" in text


@pytest.mark.parametrize("over, culprit", [
    ({"epochs": 0}, "finetune config: epochs must be a positive number, got 0"),
    ({"seeds": [1, 1]}, "finetune config: seeds must be distinct, got [1, 1]"),
    ({"labels": "yes"}, "finetune config: labels must be a list of (a string) of at least 2 or null, got 'yes'"),
    ({"lr": "1e-4"}, "finetune config: lr must be a positive number, got '1e-4'"),  # YAML reads 1e-4 as a string
    ({"batchsize": 8}, "finetune config: unknown key 'batchsize'"),
])
def test_bad_finetune_config_names_the_culprit(over, culprit):
    from lmc_ray.training import finetune

    raw = {"base": "b", "train": {"path": "t.jsonl", "text": "s", "label": "l"}, "labels": ["a", "b"], "output": "o"}
    with pytest.raises(ConfigError) as e:
        finetune.from_dict(raw | over)
    assert str(e.value).startswith(culprit)


def test_paths_in_a_config_file_are_relative_to_it(tmp_path, monkeypatch):
    """Models, data, store, tokenizer and cache written relative to the YAML file resolve against its folder,
    whatever the working directory; a model keeps the name it was written with; hub ids and URLs stay as they
    are; shipped configurations and flags resolve against the working directory."""
    import yaml

    exp = tmp_path / "exp"
    (exp / "m0").mkdir(parents=True)
    (exp / "data").mkdir()
    (exp / "data" / "dev.tsv").write_text("x\n")
    (exp / "sweep.yaml").write_text(yaml.safe_dump({
        "models": ["m0", "./m{1..2}", {"ref": "../elsewhere/m3", "name": "third"}, "org/model", "s3://b/m4"],
        "eval_sets": [{"name": "a", "path": "data/dev.tsv", "text": ["x"], "label": "y"},
                      {"name": "b", "path": "nyu-mll/glue", "text": ["x"], "label": "y"}],
        "store": "results/run", "tokenizer": "m0", "cache_dir": "cache"}))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = config.load(config.parser("").parse_args(["--config", str(exp / "sweep.yaml"), "--cache-dir", "c2"]))
    assert [(m.ref, m.name) for m in cfg.models] == [
        (f"{exp}/m0", "m0"), (f"{exp}/m1", "m1"), (f"{exp}/m2", "m2"), (f"{tmp_path}/elsewhere/m3", "third"),
        ("org/model", "org/model"), ("s3://b/m4", "s3://b/m4")]
    assert [e.path for e in cfg.eval_sets] == [f"{exp}/data/dev.tsv", "nyu-mll/glue"]
    assert (cfg.store, cfg.tokenizer, cfg.cache_dir) == (f"{exp}/results/run", f"{exp}/m0", f"{elsewhere}/c2")
    shipped = config.load(config.parser("").parse_args(["--config", "mnli"]))
    assert shipped.store == f"{elsewhere}/results/mnli" and shipped.models[0].ref == "connectivity/feather_berts_0"
