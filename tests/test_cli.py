"""The job's contract on the process, as a user sees it: one line on stderr, an exit code, nothing half written."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import yaml
from safetensors.torch import load_file, save_file

from conftest import ROOT, free_port, sweep_config

SWEEP = [sys.executable, str(ROOT / "jobs" / "sweep.py"), "--config"]


def _config(tmp_path, models, **over) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep_config(models, tmp_path / "store", **over)))
    return str(path)


def _ours(stderr: str) -> list[str]:
    """What lmc-ray itself said: Ray's own start-up lines (auth notice, core-worker notes) are left out."""
    return [line for line in stderr.splitlines() if line.startswith("lmc-ray:")]


def test_each_command_names_itself_in_its_help():
    for command in ("sweep", "analyse", "export"):
        code = f"from lmc_ray.cli import entry; entry([{command!r}, '--help'])"  # as the console script calls it
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and run.stdout.startswith(f"usage: lmc-ray {command} "), run.stdout[:200]


def test_nan_weights_found_in_an_actor_are_one_line_without_its_traceback(tmp_path, population):
    bad = tmp_path / "nan_model"
    shutil.copytree(population[1], bad)
    state = load_file(bad / "model.safetensors")
    state["classifier.bias"][0] = float("nan")
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    run = subprocess.run(SWEEP + [_config(tmp_path, [population[0], bad], actors=2)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "ModelActor pid=" not in run.stderr, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1] == \
        f"lmc-ray: error: model '{bad}': parameter 'classifier.bias' contains NaN or inf"
    assert not (tmp_path / "store" / "curves").exists() and not (tmp_path / "store" / "_lease.json").exists()


def test_ctrl_c_is_one_line_saying_what_is_stored_and_how_to_resume(tmp_path, population):
    store = tmp_path / "store"
    # A 10-point grid on four models: long enough to be interrupted after its first pair.
    job = subprocess.Popen(SWEEP + [_config(tmp_path, population, alphas=10)], start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (store / "curves").is_dir() or not any((store / "curves").iterdir()):
            assert time.time() < deadline and job.poll() is None, "no pair was stored"
            time.sleep(0.1)
        os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    stored = len(list((store / "curves").iterdir()))
    assert job.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert _ours(err) == [f"lmc-ray: interrupted: {stored} of 6 pairs are stored in {store}; rerun the same "
                          "command to resume"]
    assert sorted(os.listdir(store)) == ["curves", "endpoints", "run.json"]  # no lease, no _tmp/ left


def test_a_stale_ray_address_is_found_in_seconds(tmp_path, population):
    """`ray.init()` joins the address in $RAY_TMPDIR/ray/ray_current_cluster; one left by a dead cluster made a
    sweep retry it for over ten minutes."""
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
    try:
        dead = f"127.0.0.1:{free_port()}"
        os.makedirs(os.path.join(ray_tmp, "ray"))
        with open(os.path.join(ray_tmp, "ray", "ray_current_cluster"), "w") as f:
            f.write(dead)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": ray_tmp}
        config = _config(tmp_path, population[:3])
        # Given explicitly, a dead address is an error at once.
        start = time.monotonic()
        run = subprocess.run(SWEEP + [config], capture_output=True, text=True, timeout=300, env=env | {"RAY_ADDRESS": dead})
        assert run.returncode == 2 and time.monotonic() - start < 60, run.stderr[-2000:]
        assert _ours(run.stderr) == [f"lmc-ray: error: RAY_ADDRESS={dead}: no Ray cluster answers at {dead}; start it "
                                     "(`ray start --head`) or unset RAY_ADDRESS to run on a local instance"]
        # Found by Ray itself, it is reported and the sweep runs on a local instance.
        run = subprocess.run(SWEEP + [config], capture_output=True, text=True, timeout=300, env=env)
        assert run.returncode == 0, run.stderr[-2000:]
        assert f"no Ray cluster answers at {dead}, the address a `ray start` left in {ray_tmp}/ray/ray_current_cluster" \
            in run.stderr
        assert len(os.listdir(tmp_path / "store" / "curves")) == 3
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_failed_sweep_exits_1_with_one_line(tmp_path, population):
    """The CLI contract on the process: actors that can never start (a GPU asked of a cluster without one)."""
    run = subprocess.run(SWEEP + [_config(tmp_path, population[:2], device="cpu", gpus_per_actor=1,
                                          resource_timeout=3)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]
    (line,) = _ours(run.stderr)
    assert line.startswith("lmc-ray: sweep failed: 1 of 1 actors never started in ") and "each needs 1.00 GPU" in line
    assert line.endswith("(rerun the same command to resume)") and "Traceback" not in run.stderr


def _refused(tmp_path, models, *flags, **over):
    """The sweep command on a config with `over` and `flags`: (its stderr lines of ours, exit code, seconds)."""
    start = time.monotonic()
    run = subprocess.run(SWEEP + [_config(tmp_path, models, **over), *flags], capture_output=True, text=True,
                         timeout=120)
    return _ours(run.stderr), run.returncode, time.monotonic() - start, run.stderr


BAD_INPUT = [
    # (config keys, flags, the one line)
    ({}, ["--alphas", "2"], "config: alphas = 2: a barrier needs at least 3 points (the two models and one between)"),
    ({"alphas": [0, 1]}, [], "config: alphas [0.0, 1.0]: a barrier needs at least 3 points, one of them between "
                             "the two models (e.g. [0, 0.5, 1])"),
    ({}, ["--alphas", "100000000"], "config: alphas = 100000000: at most 1000 points on a line (the paper uses 10; "
                                    "refine adds points where the barrier is)"),
    ({"eval_sets": [{"name": "nli", "path": "x.tsv", "text": ["premise"]}]}, [],
     "eval set 'nli': has no label; the models are classifiers (text sets without labels are for causal LMs)"),
    ({"eval_sets": [{"name": "nli", "path": "x.tsv", "text": ["premise"], "label": "y", "label_map": {"a": 3}}]}, [],
     "config: eval set 'nli': label_map['a'] is 3: label_map must be a mapping to (a string or a list of (a "
     "string)) or null"),
    ({}, ["--gpus-per-actor", "0.3"], "config: gpus_per_actor 0.3: an actor computes on one GPU, alone (1) or "
                                      "shared by k actors (1/k: 0.5, 0.3333, 0.25, ...)"),
    ({}, ["--max-length", "200"], "config: max_length 200 is more than model 'M0' has positions (128); set "
                                  "max_length 128 or less, or auto"),
]


def test_bad_input_is_one_line_within_seconds_and_writes_nothing(tmp_path, population, short_population):
    """Each mistake a new user makes first: one line naming the culprit and what is allowed, exit 2, within 10 s
    (before Ray starts), and no store."""
    for k, (over, flags, line) in enumerate(BAD_INPUT):
        where = tmp_path / str(k)
        where.mkdir()
        models = short_population if "max-length" in " ".join(flags) else population[:2]
        ours, code, seconds, stderr = _refused(where, models, *flags, **over)
        line = line.replace("'M0'", repr(str(models[0])))
        assert ours == [f"lmc-ray: error: {line}"] and code == 2, stderr[-2000:]
        assert seconds < 10, (line, seconds)
        assert not (where / "store").exists()


def test_max_length_auto_is_capped_by_the_models_positions(tmp_path, short_population):
    """A model of 128 positions: max_length auto keeps 128 tokens (512 would fail inside the actor), and run.json
    records the number it used."""
    import json

    from lmc_ray import config
    from lmc_ray.execution import local, plan

    cfg = config.from_dict(sweep_config(short_population, tmp_path / "store", alphas=3,
                                        eval_sets=[{"name": "long", "path": str(tmp_path / "long.jsonl"),
                                                    "text": ["t"], "label": "y"}]))
    (tmp_path / "long.jsonl").write_text("".join(json.dumps({"t": "word " * 300, "y": lab}) + "\n"
                                                 for lab in ("entailment", "neutral")))
    p = plan.prepare(cfg)
    assert p.cfg.max_length == 128 and max(len(x) for x in p.datas[0].input_ids) == 128
    local.run(p, progress=False)
    assert json.loads((tmp_path / "store" / "run.json").read_text())["fingerprint"]["max_length"] == 128


def test_version_and_shipped_configs_read_whole():
    run = subprocess.run([sys.executable, "-c", "from lmc_ray.cli import entry; entry(['--version'])"],
                         capture_output=True, text=True, timeout=60)
    from importlib.metadata import version

    assert run.returncode == 0 and run.stdout == f"lmc-ray {version('lmc-ray')}\n", run
    listing = subprocess.run([sys.executable, "-c", "from lmc_ray.cli import entry; entry(['configs'])"],
                             capture_output=True, text=True, timeout=60).stdout
    entries = re.split(r"\n(?=\S)", listing.strip())
    assert len(entries) >= 10 and all(e.rstrip().endswith((".", ")")) for e in entries), listing  # whole sentences


def test_store_problems_are_found_before_ray_starts(tmp_path, population):
    """A finished store, a store another sweep holds, a read-only store: each answered within 10 s (a local Ray
    instance takes longer than that to start here), and `--executor local` sweeps without Ray at all."""
    from lmc_ray.storage import lease

    config, store = _config(tmp_path, population[:2]), tmp_path / "store"
    start = time.monotonic()
    run = subprocess.run(SWEEP + [config, "--executor", "local"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.splitlines()[-1] == f"store: {store}", run.stderr[-2000:]
    assert len(os.listdir(store / "curves")) == 1 and "Ray dashboard" not in run.stderr, run.stderr[-2000:]
    print(f"--executor local: {time.monotonic() - start:.1f} s")

    def sweep(*prefix):
        start = time.monotonic()
        run = subprocess.run([*prefix, *SWEEP, config], capture_output=True, text=True, timeout=300)
        return run, time.monotonic() - start

    run, seconds = sweep()
    assert run.returncode == 0 and "is complete: 1 pairs, nothing to compute" in run.stderr, run.stderr[-2000:]
    assert seconds < 10, seconds
    held = lease.acquire(None, str(store / "_lease.json"), str(store), 120, True)
    try:
        run, seconds = sweep()
    finally:
        held.release()
    assert run.returncode == 2 and seconds < 10, (seconds, run.stderr[-2000:])
    (line,) = _ours(run.stderr)
    assert line.startswith(f"lmc-ray: error: store {str(store)!r} is being written by another sweep, pid {os.getpid()}")
    before = sorted(os.listdir(store))
    run, seconds = sweep("unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                         f'mount --bind {store} {store} && mount -o remount,bind,ro {store} && exec "$@"', "sh")
    assert run.returncode == 2 and seconds < 10, (seconds, run.stderr[-2000:])
    assert _ours(run.stderr) == [f"lmc-ray: error: store {str(store)!r}: not writable (Read-only file system)"]
    assert sorted(os.listdir(store)) == before


def test_a_full_disk_is_one_line_leaves_no_partial_file_and_resumes_exactly(tmp_path, population):
    """A store on a tmpfs filled to its last kilobytes (mounted in a user namespace of its own): the sweep, and
    later the analysis, each stop with one line naming the file and exit 1, leave no _tmp/ file, and a rerun
    once there is space finishes the store with the curves of a run that never stopped."""
    import pandas as pd

    from lmc_ray.storage.store import Store

    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir(), out.mkdir()
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(sweep_config(population, disk / "store", per_example=True,
                                                  cache_dir=str(tmp_path / "cache"))))
    sweep = f"{sys.executable} {ROOT / 'jobs' / 'sweep.py'} --config {config} --executor local"
    analyse = f"{sys.executable} {ROOT / 'jobs' / 'analyse.py'} --store {disk / 'store'}"
    script = f"""set -u
mount -t tmpfs -o size=4m tmpfs {disk}
fill() {{ dd if=/dev/zero of={disk}/fill bs=1k count=$(( $(df -k {disk} | awk 'NR==2 {{print $4}}') - $1 )) 2>/dev/null; }}
run() {{ "$@" > {out}/$step.out 2> {out}/$step.err; echo $? > {out}/$step.rc; find {disk} -name '*.part' > {out}/$step.parts; }}
fill 16; step=sweep run {sweep}
rm {disk}/fill; step=resume run {sweep}
fill 8; step=analyse run {analyse}
rm {disk}/fill; cp -r {disk}/store {out}/store
"""
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], check=True, timeout=600)
    said = {step: ((out / f"{step}.rc").read_text().strip(), _ours((out / f"{step}.err").read_text()),
                   (out / f"{step}.parts").read_text()) for step in ("sweep", "resume", "analyse")}
    for step in ("sweep", "analyse"):
        rc, lines, parts = said[step]
        assert rc == "1" and parts == "" and len(lines) == 1, (step, said[step])
        assert re.fullmatch(rf"lmc-ray: no space left on the device of {disk}/store/\S+\.(parquet|png|html|json): "
                            "what was written before is intact; free space and rerun the same command to resume",
                            lines[0]), lines
    assert said["resume"][0] == "0", (out / "resume.err").read_text()[-2000:]

    (tmp_path / "clean.yaml").write_text(yaml.safe_dump(sweep_config(population, tmp_path / "clean", per_example=True,
                                                                      cache_dir=str(tmp_path / "cache"))))
    subprocess.run(SWEEP + [str(tmp_path / "clean.yaml"), "--executor", "local"], check=True, capture_output=True,
                   timeout=300)
    key = ["model_a", "model_b", "eval_set", "subset", "alpha"]
    got, want = (Store(str(p)).curves().to_table().to_pandas().sort_values(key, ignore_index=True)
                 for p in (out / "store", tmp_path / "clean"))
    assert want.groupby(["model_a", "model_b"]).ngroups == 6 and len(want) == 6 * 5, want
    pd.testing.assert_frame_equal(got, want)


def test_paths_relative_to_the_config_file_reach_every_later_command(tmp_path, population):
    """A config written beside its models and data, swept from another folder, exported from a third: run.json
    records absolute paths. A missing local model is named in full, without a trip to the hub."""
    import json

    from conftest import MNLI

    exp = tmp_path / "exp"
    for k in (0, 1):
        shutil.copytree(population[k], exp / f"m{k}")
    (exp / "data").mkdir()
    shutil.copy(MNLI, exp / "data" / "dev.tsv")
    raw = sweep_config(["m0", "m1"], "store", alphas=3)
    raw["eval_sets"][0]["path"], raw["cache_dir"] = "data/dev.tsv", "cache"
    (exp / "sweep.yaml").write_text(yaml.safe_dump(raw))
    for name in ("run", "later"):
        (tmp_path / name).mkdir()
    run = subprocess.run(SWEEP + [str(exp / "sweep.yaml"), "--executor", "local"], cwd=tmp_path / "run",
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.splitlines()[-1] == f"store: {exp}/store", run.stderr[-2000:]
    stored = json.loads((exp / "store" / "run.json").read_text())
    assert [(m["name"], m["ref"]) for m in stored["registry"]["models"]] == [("m0", f"{exp}/m0"), ("m1", f"{exp}/m1")]
    assert stored["registry"]["eval_sets"][0]["path"] == f"{exp}/data/dev.tsv"
    export = subprocess.run([sys.executable, str(ROOT / "jobs" / "export.py"), "--store", str(exp / "store"),
                             "--pair", "m0", "m1", "--alpha", "0.5", "--out", "mid"], cwd=tmp_path / "later",
                            capture_output=True, text=True, timeout=300)
    assert export.returncode == 0 and (tmp_path / "later" / "mid" / "config.json").is_file(), export.stderr[-2000:]

    (exp / "gone.yaml").write_text(yaml.safe_dump({**raw, "models": ["./gone", "m1"], "store": "store2"}))
    start = time.monotonic()
    run = subprocess.run(SWEEP + [str(exp / "gone.yaml")], cwd=tmp_path / "run", capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and time.monotonic() - start < 10, run.stderr[-2000:]
    assert _ours(run.stderr) == [f"lmc-ray: error: model '{exp}/gone': no such directory"]
    assert not (exp / "store2").exists()


def test_a_sweep_shows_what_lmc_ray_says_and_no_ray_noise(tmp_path, population):
    """What a user sees of a sweep on a local Ray instance: our lines, the dashboard as a link to open, and
    none of Ray's start-up notices (its token-auth warning, the core worker's restart note)."""
    run = subprocess.run(SWEEP + [_config(tmp_path, population[:2], alphas=3)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stderr.splitlines()
    assert not [line for line in lines if "core_worker" in line or "WARNING" in line or "Token auth" in line], lines
    assert re.fullmatch(r"Ray dashboard: http://127\.0\.0\.1:\d+", lines[0]), lines
