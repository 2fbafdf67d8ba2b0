"""The built-in demo end to end, small: few models, short training, on the session's Ray instance."""
from pathlib import Path

from lmc_ray import demo


def test_small_demo_end_to_end_and_cached_rerun(ray_local, tmp_path, capsys):
    d = demo.DemoConfig(workdir=str(tmp_path / "demo"), n_models=3, epochs=0.05, cache_dir=str(tmp_path / "cache"),
                        max_examples=64)
    demo.run(d)
    out = capsys.readouterr().out
    store = Path(d.workdir) / "store"
    assert len(list((store / "curves").glob("pair-*.parquet"))) == 3
    assert (store / "report" / "index.html").is_file() and (store / "clusters.parquet").is_file()
    assert "cluster models" in out and f"report: {(store / 'report' / 'index.html').resolve()}" in out
    written = [Path(d.workdir) / "models" / "seed_2" / "model.safetensors", *sorted((store / "curves").iterdir())]
    before = [f.stat().st_mtime_ns for f in written]
    demo.run(d)  # everything cached: no training, no pair recomputed
    assert [f.stat().st_mtime_ns for f in written] == before
