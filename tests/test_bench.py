"""bench.py as a user runs it: every figure printed, finite and positive."""
import math
import os
import re
import subprocess
import sys

import torch

from conftest import script_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--n_inner=64", "--micro_batch_size=4", "--accum_steps=2",
        "--steps=3", "--warmup_steps=1", "--dtype=float32"]


def bench(*args):
    r = subprocess.run([sys.executable, "bench.py", *TINY, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def figures(out):
    line = next(l for l in out.splitlines() if l.startswith("tokens/s"))
    pattern = (r"tokens/s ([\d,.]+) \| sequences/s ([\d,.]+) \| ms/step ([\d.]+) \| MFU ([\d.]+)% \| "
               r"FLOPs/token ([\d.e+]+) \| compile\+first step ([\d.]+)s \| data wait ([\d.]+)% \| loss ([\d.]+)")
    values = [float(v.replace(",", "")) for v in re.fullmatch(pattern, line).groups()]
    assert all(math.isfinite(v) for v in values)
    return dict(zip(["tokens_per_sec", "seq_per_sec", "ms", "mfu", "flops", "compile_s", "wait", "loss"], values))


def test_bench_prints_every_figure_on_random_tokens():
    out = bench()
    f = figures(out)
    assert f["tokens_per_sec"] > 0 and f["seq_per_sec"] > 0 and f["ms"] > 0 and 0 < f["mfu"] < 100
    assert abs(f["tokens_per_sec"] / f["seq_per_sec"] - 128) < 1  # sequences of 128 tokens
    # MFU is FLOPs/token x tokens/s over the measured peak printed above it
    peak = float(re.search(r"peak ([\d.e+]+) FLOP/s", out).group(1))
    assert abs(f["mfu"] - 100 * f["flops"] * f["tokens_per_sec"] / peak) < 0.05 * f["mfu"] + 0.1
    assert f["loss"] > 0


def test_bench_on_prepared_blocks_with_profile(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("\n\n".join(f"Paragraph {i} says that the quick brown fox jumps over the lazy dog again." for i in range(400)))
    r = subprocess.run([sys.executable, "prepare.py", f"--dataset={text}", f"--out_dir={tmp_path / 'd'}",
                        "--split_paragraphs=True"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    trace = tmp_path / "trace.json"
    out = bench(f"--data_dir={tmp_path / 'd'}", "--profile=True", f"--trace_file={trace}")
    figures(out)
    assert "Self CPU" in out and trace.stat().st_size > 0


def test_bench_refuses_bad_settings_in_one_line():
    for args, message in ((["--steps=0"], "--steps=0: must be at least 1"),
                          (["--n_head=3"], "--n_embd=32 is not a multiple of --n_head=3"),
                          (["--vocab_size=1000"], "--vocab_size=1000: the gpt2 tokenizer's ids run to 50260"),
                          (["--device=gpu"], "--device=gpu: use auto, cpu, cuda, cuda:N or mps"),
                          (["--compile=no"], "--compile='no': use one of None, True, False"),
                          *([(["--device=cuda:0"], "--device=cuda:0: this torch")] if not torch.cuda.is_available() else [])):
        assert script_error("bench.py", *TINY, *args).startswith(message)
    # as a user sees it: one line on stderr, exit status 1, no traceback
    r = subprocess.run([sys.executable, "bench.py", *TINY, "--steps=0"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "--steps=0: must be at least 1"
