"""The README's CPU pipeline in miniature, through the command-line entry points as a user types them:
prepare.py on a slice of the real text, train.py with the CPU preset for a few seconds, finetune_glue.py
on a slice of a real GLUE task, fill_mask.py on the checkpoint. Each stage's outputs must exist and be sane."""
import json
import math
import os
import re
import subprocess
import sys


from runtime import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")


def cli(*args):
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(args)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r.stdout


def slice_of_real_data(tmp):
    """~300 KB of the shared novels and 300 + 60 rows of RTE (generated in RTE's format when ../shared is absent)."""
    text_dir, glue_dir = tmp / "text", tmp / "glue" / "RTE"
    text_dir.mkdir()
    glue_dir.mkdir(parents=True)
    novels = os.path.join(SHARED, "text", "gutenberg")
    if os.path.isdir(novels):
        for name in sorted(os.listdir(novels))[:2]:
            with open(os.path.join(novels, name), encoding="utf-8", errors="replace") as f:
                (text_dir / name).write_text(f.read()[20_000:170_000])
        for split, n in (("train", 300), ("dev", 60)):
            with open(os.path.join(SHARED, "glue", "RTE", f"{split}.tsv"), encoding="utf-8") as f:
                (glue_dir / f"{split}.tsv").write_text("".join(f.readlines()[: n + 1]))
    else:
        (text_dir / "gen.txt").write_text("\n\n".join(
            f"Chapter {i}. The traveller walked along the river for {i} days, and every night he wrote a letter home."
            for i in range(3000)))
        for split, n in (("train", 300), ("dev", 60)):
            rows = [f"{i}\tA man walks a dog number {i}.\tA {'man' if i % 2 else 'cat'} walks.\t"
                    f"{'entailment' if i % 2 else 'not_entailment'}" for i in range(n)]
            (glue_dir / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n")
    return str(text_dir), str(tmp / "glue")


def test_cram_on_a_cpu_in_miniature(tmp_path):
    text, glue = slice_of_real_data(tmp_path)
    data, out = str(tmp_path / "data"), str(tmp_path / "out")

    # 1. prepare, as in the README's "Cram on a CPU"
    cli("prepare.py", f"--dataset={text}", f"--out_dir={data}", "--split_paragraphs=True", "--min_chars=20",
        "--val_fraction=0.02")
    meta = json.load(open(os.path.join(data, "meta.json")))
    assert meta["train_blocks"] > 100 and meta["val_blocks"] >= 1 and 5.0 < meta["unigram_entropy"] < 9.0
    assert os.path.getsize(os.path.join(data, "train.bin")) == meta["train_blocks"] * 128 * 2

    # 2. train with the CPU preset, shrunk to a few seconds and a tiny model
    cli("train.py", "config/cram_cpu.py", f"--data_dir={data}", f"--out_dir={out}", f"--budget_hours={8 / 3600}",
        "--n_layer=1", "--n_head=2", "--n_embd=64", "--n_inner=128", "--micro_batch_size=8", "--batch_size=16",
        "--dtype=float32", "--eval_blocks=32", "--log_interval=1")
    log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    final = log[-1]
    assert final.get("final") and math.isfinite(final["val_loss"]) and final["val_loss"] < math.log(50304)
    assert 0.0 <= final["val_acc"] <= 1.0
    steps = [x for x in log if "loss" in x]
    assert steps and steps[-1]["loss"] < steps[0]["loss"]
    ckpt = load_checkpoint(os.path.join(out, "ckpt.pt"))
    assert ckpt["step"] == steps[-1]["step"] and ckpt["elapsed_s"] >= 8.0

    # 3. fine-tune the checkpoint on a slice of a real GLUE task
    stdout = cli("finetune_glue.py", "--task=rte", f"--glue_dir={glue}", f"--ckpt={out}/ckpt.pt", f"--out_dir={out}",
                 "--epochs=1", "--batch_size=16", "--dtype=float32")
    results = json.load(open(os.path.join(out, "glue_results.json")))
    rte = results["tasks"]["rte"]
    assert rte["n_train"] == 300 and rte["n_dev"] == {"rte": 60}
    assert 0.0 <= rte["median"]["rte"]["accuracy"] <= 100.0 and results["ckpt_step"] == ckpt["step"]
    assert "rte" in stdout and "accuracy" in stdout

    # 4. see what it learned
    stdout = cli("fill_mask.py", f"--ckpt={out}/ckpt.pt", "--text=He opened the [MASK] and went in.", "--top_k=3")
    fills = re.search(r"\[MASK\] 1 \(token \d+\): (.*)", stdout).group(1)
    probs = [float(p) for p in re.findall(r" (\d\.\d{3})(?:  |$)", fills)]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0
