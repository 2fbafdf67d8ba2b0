"""Planes through three models: the layout's geometry, and stored planes against the plainest computation."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from lmc_ray import config
from lmc_ray.compute.data import read_table
from lmc_ray.compute.plane import layout
from lmc_ray.errors import ConfigError
from lmc_ray.execution import local, plan, ray_sweep
from lmc_ray.execution.recorder import Recorder
from lmc_ray.storage.store import Store

from conftest import NLI_LABELS, sweep_config
from test_core import reference_metrics


def test_layout_puts_the_models_at_their_true_distances_and_the_grid_around_them():
    ab, ac, angle = 3.0, 2.0, math.radians(60)
    points = layout(ab, ab * ac * math.cos(angle), ac, n=5, margin=0.25)
    a, b, c, *grid = points
    assert (a.vertex, b.vertex, c.vertex) == ("A", "B", "C") and len(grid) == 25
    assert (b.x, b.y) == (3.0, 0.0) and c.x == pytest.approx(1.0) and c.y == pytest.approx(math.sqrt(3))
    assert (c.s, c.t) == (0.0, 1.0)
    for p in points:  # (s, t) lands on (x, y): θ_A + s(θ_B − θ_A) + t(θ_C − θ_A) in the orthonormal axes
        assert p.s * ab + p.t * c.x == pytest.approx(p.x) and p.t * c.y == pytest.approx(p.y)
    xs, ys = sorted({p.x for p in grid}), sorted({p.y for p in grid})
    assert xs[0] == pytest.approx(-0.75) and xs[-1] == pytest.approx(3.75) and ys[0] < 0 < math.sqrt(3) < ys[-1]
    with pytest.raises(ValueError, match="on one line"):
        layout(1.0, 2.0, 2.0, 3, 0.0)  # C = A + 2(B − A)


def _planes(models, store, **over):
    raw = sweep_config(models, store, **over)
    raw["planes"] = {"triples": [[str(models[0]), str(models[1]), str(models[2])]], "grid": 3, "margin": 0.1}
    return raw


def test_a_plane_equals_plain_hf_at_its_models_and_inside_and_resumes(tmp_path, population):
    p = plan.prepare(config.from_dict(_planes(population[:3], tmp_path / "s")))
    local.run(p, progress=False)
    store = Store(str(tmp_path / "s"))
    rows = store.planes().to_table().to_pandas()
    whole = rows[rows.subset == "all"]
    assert len(whole) == 3 + 9
    ends = store.endpoints().to_table().to_pandas().set_index(["model", "subset"])
    for vertex, model in zip("ABC", population[:3]):  # the three-way mix at each model is that model
        got = whole[whole.vertex == vertex][["loss", "accuracy"]].to_numpy()[0]
        np.testing.assert_allclose(got, ends.loc[(str(model), "all"), ["loss", "accuracy"]].to_numpy(float), atol=1e-5)
    # A grid point inside, against a state dict mixed by hand and a plain HF forward, one example at a time.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    point = whole[(whole.vertex == "")].iloc[4]  # the centre of the 3 × 3 grid
    states = [AutoModelForSequenceClassification.from_pretrained(m).state_dict() for m in population[:3]]
    model = AutoModelForSequenceClassification.from_pretrained(population[0]).eval()
    model.load_state_dict({k: a + point.s * (b - a) + point.t * (c - a) if a.is_floating_point() else a
                           for (k, a), b, c in zip(states[0].items(), states[1].values(), states[2].values())})
    tok = AutoTokenizer.from_pretrained(population[0])
    df = read_table(p.cfg.eval_sets[0])
    with torch.no_grad():
        logits = torch.stack([model(**tok(a, b, return_tensors="pt")).logits[0] for a, b in zip(df.premise, df.hypothesis)])
    want = reference_metrics(logits, [NLI_LABELS.index(v) for v in df.gold_label])
    np.testing.assert_allclose([point.loss, point.accuracy], want[:2], atol=1e-5)
    assert whole.loss.max() - whole.loss.min() > 1e-3  # the plane is not flat: the comparison means something
    # Resume: nothing left; a plane file lost is computed again, alone.
    with Recorder(p) as rec:
        assert rec.complete
    (f,) = list((tmp_path / "s" / "planes").rglob("*.parquet"))
    f.unlink()
    with Recorder(p) as rec:
        assert rec.planes == p.planes and not rec.pairs and not rec.endpoints


def test_planes_through_ray_actors_equal_the_core_and_reach_the_report(ray_local, tmp_path, population):
    """Two actors: the plane's other models are published to the one that holds its origin."""
    from lmc_ray.analysis import findings, report

    local.run(plan.prepare(config.from_dict(_planes(population, tmp_path / "local"))), progress=False)
    ray_sweep.run(plan.prepare(config.from_dict(_planes(population, tmp_path / "ray", actors=2))), progress=False)
    got, want = (Store(str(tmp_path / s)).planes().to_table().to_pandas().sort_values(["vertex", "x", "y", "subset"])
                 .reset_index(drop=True) for s in ("ray", "local"))
    pd.testing.assert_frame_equal(got, want, check_exact=False, atol=1e-6, rtol=0)
    store = Store(str(tmp_path / "ray"))
    report.write(store, findings.run(store))
    assert (tmp_path / "ray" / "report" / "planes.png").stat().st_size > 10_000
    assert 'src="planes.png"' in (tmp_path / "ray" / "report" / "index.html").read_text()


def test_a_plane_names_three_models_of_the_config(tmp_path, population):
    raw = _planes(population[:3], tmp_path / "s")
    raw["planes"]["triples"] = [[str(population[0]), str(population[1]), "nope"]]
    with pytest.raises(ConfigError, match=r"^config: planes: .*'nope' is not a model name$"):
        config.from_dict(raw)
    raw["planes"]["triples"] = [[str(population[0])] * 3]
    with pytest.raises(ConfigError, match="three different models make a plane"):
        config.from_dict(raw)
    raw["planes"] = {"triples": [[str(population[0])] * 2]}
    with pytest.raises(ConfigError, match=r"^config: planes: triples\[0\] is \[.*\]: triples must be a list of"):
        config.from_dict(raw)
