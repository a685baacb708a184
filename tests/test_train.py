"""train.py as a user runs it: a subprocess on data made by prepare.py, a tiny model, seconds per run."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from model import Bert, BertConfig
from prepare import read_token_counts
from runtime import cpu_has_matrix_units, load_checkpoint, save_checkpoint
from conftest import script_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TEXT = os.path.join(ROOT, "..", "shared", "text")
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=64", "--n_inner=128", "--micro_batch_size=8", "--batch_size=16",
        "--dtype=float32", "--compile=False", "--log_interval=1", "--eval_blocks=16"]


def run(script, *args, timeout=300, **kw):
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


def prepare(tmp, source, name, *args):
    out = str(tmp / name)
    r = run("prepare.py", f"--dataset={source}", f"--out_dir={out}", *args)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Real text prepared by prepare.py: ../shared/text when present, else generated prose."""
    tmp = tmp_path_factory.mktemp("data")
    source = SHARED_TEXT
    if not os.path.isdir(source):
        rng = np.random.default_rng(0)
        words = "the a cat dog sat on mat ran far home day night and but then was is old new red big".split()
        source = str(tmp / "gen.txt")
        with open(source, "w") as f:
            f.write("\n\n".join(" ".join(rng.choice(words, 60)) + "." for _ in range(3000)))
    return prepare(tmp, source, "prepared", "--split_paragraphs=True")


def train(data, out, *args, **kw):
    return run("train.py", f"--data_dir={data}", f"--out_dir={out}", *TINY, *args, **kw)


def train_error(data, out, *args):
    """The one-line refusal of what train(data, out, *args) would run (in this process: no torch import)."""
    return script_error("train.py", f"--data_dir={data}", f"--out_dir={out}", *TINY, *args)


def read_log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_loss_falls_clearly_on_real_text(data, tmp_path):
    r = train(data, tmp_path, "--max_steps=40")
    assert r.returncode == 0, r.stderr
    log = read_log(tmp_path)
    losses = [x["loss"] for x in log if "loss" in x]
    vals = [x["val_loss"] for x in log if "val_loss" in x]
    # the first loss is ln(ids that occur in train.bin), ~10.1 here: the others are not predicted
    assert len(losses) == 40 and losses[-1] < losses[0] - 1.25, losses
    assert len(vals) == 4 and log[-1].get("final") and vals[-1] < vals[0]
    lrs = {x["step"]: x["lr"] for x in log if "lr" in x}  # the lr of step s was set at p = (s - 1) / 40
    assert lrs[1] == pytest.approx(2.5e-4) and lrs[31] == pytest.approx(1e-3) and lrs[40] == pytest.approx(1e-4)
    assert [x["batch_size"] for x in log if "batch_size" in x][:3] == [8, 8, 8] and log[-2]["batch_size"] == 16
    ckpt = load_checkpoint(os.path.join(tmp_path, "ckpt.pt"))
    assert ckpt["step"] == 40 and ckpt["meta"]["block_size"] == 128


@pytest.mark.parametrize("schedule, expected", [
    ("trapezoid", {1: 0.0, 2: 0.5, 11: 1.0, 19: 0.5}),  # step s runs at p = (s - 1) / 20: warmup 0.1, cooldown 0.2
    ("cosine", {1: 0.0, 2: 0.5, 3: 1.0, 12: 0.5, 20: (1 + math.cos(math.pi * 17 / 18)) / 2}),
    ("linear", {1: 0.0, 2: 0.5, 3: 1.0, 12: 0.5, 20: 0.05 / 0.9}),  # BERT's: warmup 0.1 here, then down to 0 at p=1
])
def test_schedules_and_the_batch_ramp_follow_progress(data, tmp_path, schedule, expected):
    r = train(data, tmp_path, "--max_steps=20", f"--schedule={schedule}", "--learning_rate=2e-3",
              "--batch_size=32", "--batch_ramp=0.5")
    assert r.returncode == 0, r.stderr
    log = [x for x in read_log(tmp_path) if "lr" in x]
    lrs = {x["step"]: x["lr"] for x in log}
    for step, fraction in expected.items():
        assert lrs[step] == pytest.approx(2e-3 * fraction, abs=1e-12), (step, lrs)
    # 8 sequences (one micro batch) at p=0, linearly to 32 at p=0.5, in whole micro batches
    batches = [x["batch_size"] for x in log]
    assert batches[0] == 8 and batches[5] == 8 + round((24 * 0.25) / 8) * 8 and set(batches[10:]) == {32}
    assert batches == sorted(batches)


@pytest.mark.parametrize("preset, switches", [
    ("config/bert_original_cpu.py", dict(norm_scheme="post", sparse_prediction=False, decoder_bias=True)),
    ("config/bert_izsak_cpu.py", dict(norm_scheme="pre", sparse_prediction=True, decoder_bias=False)),
])
def test_the_papers_baseline_presets_train_learn_and_resume(data, tmp_path, preset, switches):
    # the preset first, then the tiny shape; 15% training masks, validation on the fixed 25% masks
    args = [preset, f"--data_dir={data}", f"--out_dir={tmp_path}", *TINY, "--learning_rate=1e-3"]
    r = run("train.py", *args, "--max_steps=12", "--stop_at_step=6")
    assert r.returncode == 0, r.stderr
    r = run("train.py", *args, "--max_steps=12", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    log = read_log(tmp_path)
    ckpt = load_checkpoint(os.path.join(tmp_path, "ckpt.pt"))
    args = ckpt["model_args"]
    assert {k: args[k] for k in switches} == switches and args["mask_fraction"] == 0.15
    assert args["positions"] == "learned" and args["ffn"] == "gelu" and args["head_transform"] and args["bias"]
    lrs = {x["step"]: x["lr"] for x in log if "lr" in x}  # linear: step s at p = (s - 1) / 12
    warmup = ckpt["config"]["warmup_fraction"]
    assert lrs[1] == 0.0 and lrs[7] == pytest.approx(1e-3 * (1 - 0.5) / (1 - warmup))
    assert {x["batch_size"] for x in log if "batch_size" in x} == {16}  # no ramp
    vals = [x["val_loss"] for x in log if "val_loss" in x]
    assert ckpt["step"] == 12 and vals[-1] < vals[0] - 0.1, vals


def test_validation_masks_stay_fixed_whatever_the_training_masking_rate(data, tmp_path):
    # learning rate 0: the weights stay at their (seeded) init, so the validation loss depends only on the
    # validation masks: the same for any --mask_fraction, different for another --eval_mask_fraction (sparse
    # and full prediction score the same positions alike: test_model.py)
    def val_loss(*args):
        out = tmp_path / "_".join(a.strip("-").replace("=", "") for a in args)
        r = train(data, out, "--max_steps=1", "--learning_rate=0", *args)
        assert r.returncode == 0, r.stderr
        return read_log(out)[-1]["val_loss"]

    base = val_loss("--mask_fraction=0.25")
    assert val_loss("--mask_fraction=0.15") == base
    # nor for another micro batch: all 12 blocks are scored (in batches of 6, or of 4), with the same masks
    twelve = val_loss("--eval_blocks=12")
    assert val_loss("--eval_blocks=12", "--micro_batch_size=4", "--batch_size=16") == pytest.approx(twelve, rel=1e-6)
    assert twelve != pytest.approx(base, rel=1e-6)
    # at init the model predicts nearly uniformly: other masks move the loss little (~4e-5), but they move it
    assert val_loss("--eval_mask_fraction=0.5") != base


def test_a_checkpoint_from_before_the_switches_resumes_as_the_crammed_model(data, tmp_path):
    r = train(data, tmp_path, "--max_steps=4", "--stop_at_step=2")
    assert r.returncode == 0, r.stderr
    path = os.path.join(tmp_path, "ckpt.pt")
    ckpt = load_checkpoint(path)
    for key in ("bias", "norm_scheme", "ffn", "positions", "head_transform", "sparse_prediction", "norm_eps"):
        del ckpt["model_args"][key]  # as an older train.py wrote them
    save_checkpoint(path, ckpt)
    assert train_error(data, tmp_path, "--max_steps=4", "--init_from=resume",
                       "--sparse_prediction=False").startswith("--sparse_prediction=False but ")
    r = train(data, tmp_path, "--max_steps=4", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(path)["step"] == 4


def test_help_lists_the_model_switches_with_their_comments_from_model_py():
    r = run("train.py", "--help")
    assert r.returncode == 0, r.stderr
    assert "--norm_scheme='pre'  # pre | post" in r.stdout and "--sparse_prediction=True  # False: logits" in r.stdout
    assert "--block_size=0  # 0: the data's" in r.stdout and "--schedule='triangle'  # triangle |" in r.stdout


def test_never_seen_ids_keep_their_initial_rows(data, tmp_path):
    # the tied decoder's softmax would push every never-seen row the same way until they are one vector;
    # left out of it (and out of the random replacements), they stay as drawn at init, only decayed
    r = train(data, tmp_path, "--max_steps=30", "--learning_rate=2e-3")
    assert r.returncode == 0, r.stderr
    ckpt = load_checkpoint(os.path.join(tmp_path, "ckpt.pt"))
    torch.manual_seed(1337)  # train.py's seed, drawn from before the model is built
    init = Bert(BertConfig(**ckpt["model_args"])).embed.wte.weight.detach()
    final = ckpt["model"]["embed.wte.weight"]
    counts = read_token_counts(data, ckpt["model_args"]["vocab_size"])
    unseen = torch.from_numpy(counts == 0)
    unseen[50257:] = False  # [MASK] and [PAD]: [MASK] is an input every step
    assert 1000 < unseen.sum() < 50000
    cos = torch.nn.functional.cosine_similarity(init[unseen], final[unseen], dim=1)
    assert cos.min() > 0.9999, cos.min()
    rows = torch.nn.functional.normalize(final[unseen][:2000], dim=1)
    pairwise = (rows @ rows.T).fill_diagonal_(0)
    # random directions in 64 dims: |cos| ~ 0.1 on average, mean ~ 0; collapsed rows would read ~0.9
    assert pairwise.abs().mean() < 0.15 and abs(pairwise.mean()) < 0.01, pairwise.mean()
    seen_cos = torch.nn.functional.cosine_similarity(init[~unseen], final[~unseen], dim=1)
    assert seen_cos.median() < 0.999  # the rows that occur did train


@pytest.mark.skipif(not shutil.which("g++"), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_training_matches_eager_and_compiles_once_per_shape(data, tmp_path):
    # compile is the GPU default, so its path must work here too: static shapes give one graph for training
    # and one for evaluation (grad mode off), whatever the batch ramp does to the accumulation count
    eager = train(data, tmp_path / "eager", "--max_steps=8", "--log_interval=4")
    compiled = train(data, tmp_path / "compiled", "--max_steps=8", "--log_interval=4", "--compile=True",
                     env={**os.environ, "TORCH_LOGS": "recompiles"})
    assert eager.returncode == 0 and compiled.returncode == 0, compiled.stderr
    assert compiled.stderr.count("Recompiling function") == 1, compiled.stderr
    assert "GLOBAL_STATE changed: grad_mode" in compiled.stderr
    log_e, log_c = read_log(tmp_path / "eager"), read_log(tmp_path / "compiled")
    loss = lambda log: [x.get("loss", x.get("val_loss")) for x in log]
    assert len(log_c) == 6 and loss(log_c) == pytest.approx(loss(log_e), rel=1e-4)
    assert [x["batch_size"] for x in log_c if "batch_size" in x] == [16, 16]  # ramped up from 8: no recompile
    # the first step's compilation counts in the budget's clock but not in the first interval's tokens/s.
    # Compiling takes seconds, a tiny step milliseconds: bounds with that much room hold on a loaded machine
    # too (where OpenMP threads contend, compiled steps ran 6.8 s for four against 13 s of compilation)
    first, second = [x for x in log_c if "tokens_per_sec" in x]
    assert first["elapsed_s"] > second["elapsed_s"] - first["elapsed_s"]
    assert first["tokens_per_sec"] > second["tokens_per_sec"] / 10


def test_resume_continues_bitwise(data, tmp_path):
    # with dropout on, so the global RNG's state must survive the resume too (nothing may draw from it at start-up)
    straight, staged = tmp_path / "straight", tmp_path / "staged"
    assert train(data, straight, "--max_steps=8", "--dropout=0.1").returncode == 0
    r = train(data, staged, "--max_steps=8", "--dropout=0.1", "--stop_at_step=4")
    assert r.returncode == 0 and load_checkpoint(os.path.join(staged, "ckpt.pt"))["step"] == 4, r.stderr
    # a kill after an evaluation but before the next checkpoint: the resume evaluates again, and keeps one record
    with open(os.path.join(staged, "log.jsonl"), "a") as f:
        f.write(json.dumps({"step": 4, "progress": 0.5, "val_loss": 9.9, "val_acc": 0.0}) + "\n")
    r = train(data, staged, "--max_steps=8", "--dropout=0.1", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(os.path.join(straight, "ckpt.pt")), load_checkpoint(os.path.join(staged, "ckpt.pt"))
    assert a["step"] == b["step"] == 8 and a["data_state"] == b["data_state"]
    assert a["nonfinite_steps"] == b["nonfinite_steps"] == {"total": 0, "in_a_row": 0, "most_in_a_row": 0}
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # the resumed run appends to the staged log: together they read as the straight run, evaluations included
    timing = ("tokens_per_sec", "mfu", "data_wait", "elapsed_s", "remaining_s")
    untimed = lambda log: [{k: v for k, v in x.items() if k not in timing} for x in log]
    assert untimed(read_log(staged)) == untimed(read_log(straight))


def test_resuming_a_finished_run_after_a_torn_log_line_adds_nothing(data, tmp_path):
    r = train(data, tmp_path, "--max_steps=4", "--log_interval=10")
    assert r.returncode == 0 and "done: step 4 of 4," in r.stdout
    before = read_log(tmp_path)
    # a step clock's last step is logged even when log_interval is longer, and no budget is reported
    assert [x["step"] for x in before if "loss" in x] == [4] and "remaining_s" not in before[-2]
    with open(os.path.join(tmp_path, "log.jsonl"), "a") as f:
        f.write('{"step": 4, "loss": 10.')  # a kill -9 in the middle of a write
    r = train(data, tmp_path, "--max_steps=4", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    assert read_log(tmp_path) == before and sum(bool(x.get("final")) for x in before) == 1
    # a resumed run keeps its model and its data: settings that contradict them are refused, not ignored
    def refusal(data_dir, *args):
        return train_error(data_dir, tmp_path, "--max_steps=4", "--init_from=resume", *args)

    message = refusal(data, "--n_layer=3")
    assert message.startswith("--n_layer=3 but") and "keeps its model" in message
    other_text = tmp_path / "other.txt"
    other_text.write_text("\n\n".join(f"Paragraph {i} of another corpus, with words enough to fill a block." * 8
                                      for i in range(200)))
    other = prepare(tmp_path, str(other_text), "other", "--split_paragraphs=True")
    assert "was trained on other data (source" in refusal(other)
    message = refusal(data, "--seed=7")  # the data order follows it
    assert message.startswith("--seed=7 but") and "keeps its model and seed" in message
    r = train(data, tmp_path, "--max_steps=4", "--init_from=resume", "--learning_rate=5e-4")
    assert r.returncode == 0 and "differ from the checkpoint's run: learning_rate 0.001 -> 0.0005" in r.stdout
    # a finished run continued with a longer clock trains on and evaluates its new end
    r = train(data, tmp_path, "--max_steps=6", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    assert [x["step"] for x in read_log(tmp_path) if x.get("final")] == [4, 6]


def test_epochs_neither_reread_nor_skip_blocks(tmp_path):
    """20 blocks, 8 per micro batch: epoch ends fall inside batches; resume still exact."""
    text = tmp_path / "small.txt"
    text.write_text(" ".join(f"Sentence number {i} is here." for i in range(500)))
    small = prepare(tmp_path, str(text), "small", "--val_fraction=0.0", "--min_chars=10")
    n_train = json.load(open(os.path.join(small, "meta.json")))["train_blocks"]
    assert n_train == 27  # 3,555 tokens
    r = train(small, tmp_path / "o", "--max_steps=5", "--batch_ramp=0.0")
    assert r.returncode == 0, r.stderr
    state = load_checkpoint(os.path.join(tmp_path, "o", "ckpt.pt"))["data_state"]
    drawn = 5 * 16
    assert state == {"epoch": drawn // n_train, "cursor": drawn % n_train}


def test_a_budget_stops_at_the_first_step_past_it_and_checkpoints(data, tmp_path):
    r = train(data, tmp_path, f"--budget_hours={10 / 3600}")
    assert r.returncode == 0, r.stderr
    ckpt = load_checkpoint(os.path.join(tmp_path, "ckpt.pt"))
    steps = [x for x in read_log(tmp_path) if "loss" in x]  # every step is logged (log_interval 1)
    # the step before the last ended inside the budget, so the last one was due; after it the clock read >= 10 s
    assert steps[-1]["step"] == ckpt["step"] and steps[-2]["elapsed_s"] < 10.0 <= ckpt["elapsed_s"]
    assert read_log(tmp_path)[-1].get("final")


def test_sigterm_stops_at_a_micro_batch_and_the_resume_is_exact(data, tmp_path):
    # 8 micro batches a step: the signal lands inside a step, which is dropped (torchrun's agent sends SIGKILL
    # ~30 s after SIGTERM, too soon to finish a long step); the data position goes back to that step's start
    accumulate = ["--batch_size=64", "--batch_ramp=0.0", "--max_steps=400", "--dropout=0.1"]
    staged, straight = tmp_path / "staged", tmp_path / "straight"
    proc = subprocess.Popen([sys.executable, "train.py", f"--data_dir={data}", f"--out_dir={staged}", *TINY,
                             *accumulate], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log_path = os.path.join(staged, "log.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.exists(log_path) and os.path.getsize(log_path) > 0):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in out and "written in" in out
    ckpt = load_checkpoint(os.path.join(staged, "ckpt.pt"))
    stopped_at = ckpt["step"]
    assert 1 <= stopped_at < 400 and ckpt["micro_steps"] == 8 * stopped_at  # no half step counted
    r = train(data, staged, *accumulate, f"--max_steps={stopped_at + 3}", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    r = train(data, straight, *accumulate, f"--max_steps={stopped_at + 3}")
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(os.path.join(straight, "ckpt.pt")), load_checkpoint(os.path.join(staged, "ckpt.pt"))
    assert a["step"] == b["step"] == stopped_at + 3 and a["data_state"] == b["data_state"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_resume_keeps_the_precision_the_run_started_with(data, tmp_path):
    r = train(data, tmp_path, "--max_steps=4", "--stop_at_step=2")  # TINY asks for float32
    assert r.returncode == 0 and load_checkpoint(os.path.join(tmp_path, "ckpt.pt"))["dtype"] == "float32"
    args = [a for a in TINY if not a.startswith("--dtype")]  # dtype=auto: bfloat16 on a CPU with bf16 units
    r = run("train.py", f"--data_dir={data}", f"--out_dir={tmp_path}", *args, "--max_steps=4", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    assert "float32, compile False" in r.stdout and "bfloat16" not in r.stdout
    assert load_checkpoint(os.path.join(tmp_path, "ckpt.pt"))["dtype"] == "float32"
    # a bf16 checkpoint: kept where the CPU has bf16 units, else refused with the way on; another --dtype is said
    ckpt = load_checkpoint(os.path.join(tmp_path, "ckpt.pt"))
    ckpt["dtype"] = "bfloat16"
    save_checkpoint(os.path.join(tmp_path, "ckpt.pt"), ckpt)
    r = run("train.py", f"--data_dir={data}", f"--out_dir={tmp_path}", *args, "--max_steps=6", "--init_from=resume")
    if cpu_has_matrix_units(torch.bfloat16):
        assert r.returncode == 0 and "bfloat16, compile False" in r.stdout, r.stderr
    else:
        assert r.returncode != 0 and r.stderr.strip().endswith(
            "was trained in bfloat16, which this CPU has no matrix units for (many times slower than float32): "
            "continue it with --dtype=float32"), r.stderr
    r = train(data, tmp_path, "--max_steps=6", "--init_from=resume")  # TINY's --dtype=float32
    assert r.returncode == 0 and "--dtype=float32 replaces the precision" in r.stdout, r.stderr


def test_ddp_two_ranks_on_cpu_stay_identical_learn_and_resume_bitwise(data, tmp_path):
    def ddp(out, *args):
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "train.py", f"--data_dir={data}", f"--out_dir={out}", *TINY, "--max_steps=12",
                            "--learning_rate=4e-3", "--batch_size=32", *args],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]

    straight, staged = tmp_path / "straight", tmp_path / "staged"
    ddp(straight)
    steps = [x for x in read_log(straight) if "loss" in x]
    assert len(steps) == 12 and all(x["rank_spread"] == 0.0 for x in steps)  # checked after every step
    assert steps[-1]["loss"] < steps[0]["loss"] - 0.5
    # 8 per rank x 2 ranks, ramped to 2 micro steps: the first runs under no_sync, the second all-reduces
    assert steps[0]["batch_size"] == 16 and steps[-1]["batch_size"] == 32
    # each rank's masks are seeded by (micro step, rank): a resumed DDP run needs no generator state
    # (dropout draws from the same seed: test_resume_continues_bitwise resumes it exactly)
    ddp(staged, "--stop_at_step=5")
    ddp(staged, "--init_from=resume")
    a = load_checkpoint(os.path.join(straight, "ckpt.pt"))
    b = load_checkpoint(os.path.join(staged, "ckpt.pt"))
    assert a["step"] == b["step"] == 12 and a["data_state"] == b["data_state"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    if shutil.which("g++"):  # compiled DDP (the multi-GPU default; dynamo splits it at the gradient buckets)
        compiled = tmp_path / "compiled"
        ddp(compiled, "--compile=True")
        steps_c = [x for x in read_log(compiled) if "loss" in x]
        assert all(x["rank_spread"] == 0.0 for x in steps_c)
        assert [x["loss"] for x in steps_c] == pytest.approx([x["loss"] for x in steps], rel=1e-4)


def test_non_finite_loss_stops_the_run_without_writing_a_checkpoint(data, tmp_path):
    r = train(data, tmp_path, "--max_steps=30", "--learning_rate=1e30", "--log_interval=10")
    assert r.returncode != 0 and "non-finite" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(tmp_path, "ckpt.pt"))


def test_clear_errors(data, tmp_path):
    def err(data_dir, *args):
        return train_error(data_dir, tmp_path / "out", *args)

    empty = tmp_path / "empty"
    empty.mkdir()
    # as a user sees it: one line on stderr, exit status 1, no traceback
    r = train(empty, tmp_path / "out")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    message = err(empty)
    assert r.stderr.strip().splitlines()[-1] == message and "prepare the data first" in message
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text(open(os.path.join(data, "meta.json")).read())
    assert "train.bin not found" in err(broken)
    (broken / "train.bin").write_bytes(open(os.path.join(data, "train.bin"), "rb").read()[:1000])
    (broken / "val.bin").write_bytes(open(os.path.join(data, "val.bin"), "rb").read())
    assert "not a whole number" in err(broken)
    old = json.load(open(os.path.join(data, "meta.json")))
    del old["block_prefix"]  # a folder from before blocks began with [CLS]
    (broken / "meta.json").write_text(json.dumps(old))
    assert "older prepare.py" in err(broken) and "--force=True" in err(broken)
    assert "contradicts" in err(data, "--block_size=64")
    assert "contradicts" in err(data, "--vocab_size=32768")
    assert "did you mean n_layer" in err(data, "--n_layers=3")
    assert err(data, "--micro_batch_size=0") == "--micro_batch_size=0: must be at least 1"
    assert "is not a multiple of --n_head=5" in err(data, "--n_head=5")  # the model's shape, checked in BertConfig
    assert "--budget_hours=0.0" in err(data, "--budget_hours=0")
    assert err(data, "--schedule=step") == "--schedule=step: unknown; use triangle, trapezoid, cosine or linear"
    assert err(data, "--schedule=linear", "--warmup_fraction=0") == (
        "--warmup_fraction=0.0 with --schedule=linear: the warmup must take part of the budget, in (0, 1); "
        "BERT's is 0.01")
    assert err(data, "--schedule=trapezoid", "--cooldown_fraction=0") == (
        "--cooldown_fraction=0.0 with --schedule=trapezoid: the decay must take part of the budget after the "
        "warmup (0.1), in (0, 0.9]")
    assert err(data, "--norm_scheme=sandwich") == "--norm_scheme=sandwich: choose pre or post"
    assert err(data, "--max_steps=-3") == "--max_steps=-3: must be at least 0"  # trained forever before
    # without TINY's --compile=False before it
    assert script_error("train.py", f"--data_dir={data}", "--compile=false") == (
        "--compile='false': use one of None, True, False")
    (tmp_path / "a_file").write_text("")
    assert err(data, f"--out_dir={tmp_path / 'a_file'}").endswith("a_file is a file: give a folder (it is created if missing)")
    (broken / "meta.json").write_text('{"block_size": ')
    assert "meta.json is not valid JSON" in err(broken)
    os.makedirs(tmp_path / "out", exist_ok=True)
    (tmp_path / "out" / "ckpt.pt").write_bytes(b"not a checkpoint at all")
    assert "corrupt" in err(data, "--init_from=resume")
    assert "exists" in err(data)  # a scratch run never silently replaces a checkpoint
    torch.save({"weights": torch.zeros(2)}, tmp_path / "out" / "ckpt.pt")
    assert "not a cram checkpoint" in err(data, "--init_from=resume")
