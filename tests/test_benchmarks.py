"""The GPU benchmarks run end to end at toy size on a CPU, so they are ready when a GPU is there: each runs as on the
lent GPU machine, without the packages its image lacks (lmc_ray/testing/device_image.py)."""
import re
import subprocess
import sys

from conftest import DATA, ROOT

AS_THERE = [sys.executable, "-m", "lmc_ray.testing.device_image"]


def test_gpu_benchmark_prints_a_row_per_technique_at_toy_size():
    out = subprocess.run([*AS_THERE, str(ROOT / "benchmarks" / "gpu.py"), "--data-dir", str(DATA), "--layers", "2",
                          "--hidden", "64", "--heads", "2", "--examples", "32", "--repeat", "1", "--models", "3",
                          "--full-hans", "2000", "--batch-tokens", "2048"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {}
    for line in out.stdout.splitlines():
        m = re.match(r"(.+?)\s+\|\s+([\d.]+) \|\s+(\d+)% \|\s+([\d.]+) \|\s+([\d.]+)% \|\s+([\d.]+) (min|h) \|"
                     r"\s*(\S*)(?: \|\s+(\S+) \| (.*))?$", line)
        if m:
            rows[m.group(1)] = m.groups()[1:]
    assert set(rows) == {"paper (fp32, pad 512, batch 512, reloads)", "fp32, padded batches (reference)",
                         "bf16, padded batches", "bf16, packed, separate QKV", "bf16, packed, fused QKV"}, out.stdout
    packed = rows["bf16, packed, fused QKV"]
    assert int(rows["bf16, padded batches"][1]) > int(rows["paper (fp32, pad 512, batch 512, reloads)"][1])
    assert float(rows["fp32, padded batches (reference)"][6]) == 0  # the reference row itself
    for name in ("bf16, padded batches", "bf16, packed, separate QKV", "bf16, packed, fused QKV"):
        assert 0 < float(rows[name][6]) < 1e-2  # bf16 moved the losses, a little
    assert packed[7] == "-" and re.fullmatch(r"mnli \d+, hans \d+", packed[8]), packed  # no graphs on a CPU
    assert out.stdout.count("skipped: CUDA graphs need a GPU") == 2 and "skipped: TF32 needs a GPU" in out.stdout
    assert re.search(r"^bf16, packed, whole forward compiled +\| skipped: on a CPU only with --cpu-compiler$",
                     out.stdout, re.M), out.stdout
    assert re.search(r"fastest: .+, \d+x the paper's procedure; projected full MNLI sweep [\d.]+ min", out.stdout)
    shape = re.search(r"^paper shape: float32, packing False; line on mnli 32 \+ hans 32 .* hans_full 2000 rows "
                      r"endpoints-only in \d+ streams .* loss [\d.]+$", out.stdout, re.M)
    assert shape, out.stdout
    assert re.search(r"sweep: 3 models, 3 pairs .* in [\d.]+ s", out.stdout)
    assert re.search(r"^versions: Python [\d.]+, torch .+, transformers .+; no GPU$", out.stdout, re.M)
    assert re.search(r"^done in \d+ s$", out.stdout, re.M)


def test_gpu_finetune_benchmark_times_both_dtypes_at_toy_size():
    out = subprocess.run([*AS_THERE, str(ROOT / "benchmarks" / "gpu_finetune.py"), "--data-dir", str(DATA),
                          "--layers", "2", "--hidden", "64", "--heads", "2", "--examples", "256", "--steps", "8"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = dict(re.findall(r"^ *(float32|bfloat16) \| +([\d.]+) \|", out.stdout, re.M))
    assert set(rows) == {"float32", "bfloat16"} and all(float(v) > 0 for v in rows.values()), out.stdout
    gap = re.search(r"weights [\d.e+-]+ apart, ([\d.]+)% of the", out.stdout)
    assert gap and 0 < float(gap[1]) < 50, out.stdout  # bf16 moved the weights, a little


def test_dtype_error_benchmark_brackets_tf32_on_a_cpu_by_emulation(tmp_path, population):
    """On a CPU TF32 is two emulated rows (rounded, truncated); both moved the losses, a little."""
    import yaml

    from conftest import sweep_config

    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(sweep_config(population[:3], tmp_path / "unused", alphas=10)))
    out = subprocess.run([*AS_THERE, str(ROOT / "benchmarks" / "dtype_error.py"), "--config", str(cfg),
                          "--dtypes", "tfloat32"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r: float(loss) for r, loss in re.findall(
        r"^ *tfloat32 \(emulated, (\w+)\) \| +[\d.]+ \| +[\d.e+-]+ \| +[\d.e+-]+ \| +([\d.e+-]+) \|", out.stdout, re.M)}
    assert set(rows) == {"nearest", "truncate"} and all(0 < d < 1e-3 for d in rows.values()), out.stdout
    assert re.search(r"3 models, 3 pairs x 10 α", out.stdout), out.stdout
    # the machine line says whether bf16/fp16 have hardware here: it decides whether they beat fp32 on a CPU
    assert re.search(r"^machine: \d+ CPUs \(.+, (half precision in hardware: .+|no bf16/fp16 instructions)\)",
                     out.stdout, re.M), out.stdout


def test_the_gpu_check_is_one_call_under_6_minutes_without_pip():
    """benchmarks/device.sh run: its time limits (gpu.py's, then adapters.py's) leave room for the machine's start
    and a second try within 15 minutes of a GPU, and it installs nothing with pip (the GPU image may have none):
    wheels are unpacked."""
    text = (ROOT / "benchmarks" / "device.sh").read_text()
    body = text[text.index("\nsite() {"):text.index("\nfinetune() {")]
    limits = [int(x) for x in re.findall(r"timeout (\d+) ", body)]
    assert len(limits) == 2 and sum(limits) <= 340, limits
    budget = re.search(r"gpu\.py .*--budget (\d+)", body)
    assert budget and int(budget[1]) + 30 <= limits[0]  # gpu.py stops its optional rows well before the limit
    assert "pip" not in body and "zipfile -e" in body


def test_store_scale_benchmark_reads_every_pair_at_toy_size():
    """The 1,000-model store benchmark at 40 models: both layouts read every row, batch files are few, and the
    S3 read counts its requests."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "store_scale.py"), "--models", "40",
                          "--baseline-pairs", "300", "--chunk", "64"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    layouts = dict(re.findall(r"^  (one file per pair|batch files) +([\d,]+) files, .*\(3,000 rows\)$", out.stdout,
                              re.M))
    assert layouts == {"one file per pair": "300", "batch files": layouts.get("batch files")}, out.stdout
    assert 1 <= int(layouts["batch files"]) <= 5, out.stdout
    assert re.search(r"^N = 40: 780 pairs, \d+ files in curves/, .* \(7,800 rows, 40 endpoint rows, 40 models\)$",
                     out.stdout, re.M), out.stdout
    s3 = re.search(r"^N = 40 on S3 \(moto, loopback\): analysis read [\d.]+ s, (\d+) requests \(.*GET (\d+)",
                   out.stdout, re.M)
    assert s3 and 0 < int(s3[2]) <= int(s3[1]) < 100, out.stdout


def test_adapter_benchmark_holds_less_and_computes_the_same_lines_at_toy_size():
    out = subprocess.run([*AS_THERE, str(ROOT / "benchmarks" / "adapters.py"),
                          "--models", "4", "--pairs", "2", "--texts", "8"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    held = dict(re.findall(r"^(full checkpoints \(merged, baseline\)|LoRA adapters) +([\d.]+) MB", out.stdout, re.M))
    assert float(held["LoRA adapters"]) < 0.5 * float(held["full checkpoints (merged, baseline)"]), out.stdout
    diff = re.search(r"largest loss difference on the lines ([\d.e+-]+)$", out.stdout, re.M)
    assert diff and float(diff[1]) < 1e-5, out.stdout


def test_memory_plan_counts_the_published_7b_architectures():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_plan.py")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {m[0]: m[1:] for m in re.findall(r"^(Llama-2-7B|Qwen2.5-7B) +([\d.]+)B +([\d.]+) GiB", out.stdout, re.M)}
    # Llama-2-7B has 6.74 B parameters, Qwen2.5-7B 7.62 B (their model cards); fp32 is 4 bytes each.
    assert rows["Llama-2-7B"][0] == "6.74" and rows["Qwen2.5-7B"][0] == "7.62", out.stdout
    assert float(rows["Llama-2-7B"][1]) == round(6.738e9 * 4 / 2**30, 1), out.stdout
