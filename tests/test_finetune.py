"""finetune_glue.py: loaders on every task's real file format, metrics, the GLUE average, the recipe's pieces,
learnability of a tiny model on synthetic tasks, and the --task=all script end to end. CPU, tiny models."""
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
if os.path.isdir(os.path.join(SHARED, "tiktoken_cache")):
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.abspath(os.path.join(SHARED, "tiktoken_cache")))
sys.path.insert(0, ROOT)

import configurator  # noqa: E402
import finetune_glue as fg  # noqa: E402
from configurator import CramError  # noqa: E402
from model import Bert, BertConfig  # noqa: E402
from prepare import Tokenizer  # noqa: E402
from runtime import load_checkpoint, save_checkpoint  # noqa: E402

WORDS = "the a cat dog sat ran on mat big small red blue house tree bird fish old new".split()
NLI2, NLI3 = ("entailment", "not_entailment"), ("entailment", "neutral", "contradiction")
MNLI_COLS = "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse sentence2_parse sentence1 sentence2".split()
HEADERS = {  # the GLUE distribution's header rows (CoLA has none)
    "sst2": ["sentence", "label"],
    "mrpc": ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
    "stsb": "index genre filename year old_index source1 source2 sentence1 sentence2 score".split(),
    "qqp": "id qid1 qid2 question1 question2 is_duplicate".split(),
    "qnli": "index question sentence label".split(),
    "rte": "index sentence1 sentence2 label".split(),
    "wnli": "index sentence1 sentence2 label".split(),
}


def sentence(rng, k=5):
    return " ".join(rng.choice(WORDS) for _ in range(k))


def make_row(task, i, rng, dev):
    """(tsv fields, expected (a, b, label id)) for row i of a task, in that task's real format."""
    a, b, y = sentence(rng), sentence(rng), i % 2
    if task == "cola":
        return ["gj04", str(y), "" if y else "*", a], (a, None, y)
    if task == "sst2":
        return [a + " ", str(y)], (a, None, y)  # SST-2 keeps a space before the tab
    if task == "mrpc":
        return [str(y), str(1000 + i), str(2000 + i), a, '"' + b], (a, '"' + b, y)  # an unbalanced quote per row
    if task == "stsb":
        s = round(rng.uniform(0, 5), 3)
        return [str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", a, b, f"{s:.3f}"], (a, b, s)
    if task == "qqp":
        return [str(i), str(2 * i), str(2 * i + 1), a, b, str(y)], (a, b, y)
    if task == "mnli":
        y = i % 3
        return ([str(i), "31193", f"{i}n", "fiction", "( ( a ) )", "( b )", "(ROOT (S))", "(ROOT (S))", a, b, NLI3[y]]
                + [NLI3[y]] * (4 if dev else 0) + [NLI3[y]]), (a, b, y)
    if task in ("qnli", "rte"):
        return [str(i), a, b, NLI2[y]], (a, b, y)
    return [str(i), a, b, str(y)], (a, b, y)  # wnli


def write_glue(root, tasks, n_train=16, n_dev=8, seed=0):
    """Tiny files in the GLUE distribution's layout; returns {task: {split: [(a, b, y), ...]}}."""
    rng, expected = random.Random(seed), {}
    for task in tasks:
        folder = os.path.join(root, fg.TASKS[task]["folder"])
        os.makedirs(folder, exist_ok=True)
        files = {"train": "train.tsv", **{row: f for row, (_, f) in fg.dev_sets(task).items()}}
        expected[task] = {}
        for split, fname in files.items():
            dev = split != "train"
            if task == "mnli":
                header = MNLI_COLS + (["label1", "label2", "label3", "label4", "label5"] if dev else ["label1"]) + ["gold_label"]
            else:
                header = HEADERS.get(task)
            rows = [make_row(task, i, rng, dev) for i in range(n_dev if dev else n_train)]
            lines = (["\t".join(header)] if header else []) + ["\t".join(f) for f, _ in rows]
            text = "\n".join(lines) + ("" if task == "cola" else "\n")  # CoLA's dev.tsv has no final newline
            with open(os.path.join(folder, fname), "w", encoding="utf-8-sig" if task == "mrpc" else "utf-8", newline="") as f:
                f.write(text)  # utf-8-sig: MRPC ships with a byte-order mark
            expected[task][split] = [e for _, e in rows]
    return expected


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # CI shares 2 cores: under contention torch's worker threads wait on each other and these tiny models ran
    # 10-20x slower with 2 threads than with 1 (90 s vs 4 s for the learnability tests)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer("gpt2")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tok):
    """A tiny 'pretrained' checkpoint in train.py's format (random weights: these tests check the plumbing)."""
    cfg = BertConfig(n_layer=2, n_head=2, n_embd=64, n_inner=128)
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    save_checkpoint(path, {"model": Bert(cfg).state_dict(), "model_args": asdict(cfg), "meta": tok.meta(),
                           "step": 7, "tokens_seen": 0})
    return path


@pytest.fixture(scope="module")
def bert_ckpt(tmp_path_factory, tok):
    """The same with the original BERT's architecture (config/bert_original.py): post-LN, learned positions, biases,
    plain GELU, the MLM head transform."""
    cfg = BertConfig(n_layer=2, n_head=2, n_embd=64, n_inner=128, bias=True, norm_scheme="post", ffn="gelu",
                     positions="learned", head_transform=True, decoder_bias=True, sparse_prediction=False)
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("ckpt") / "bert.pt")
    save_checkpoint(path, {"model": Bert(cfg).state_dict(), "model_args": asdict(cfg), "meta": tok.meta(),
                           "step": 7, "tokens_seen": 0})
    return path


def run(**settings):
    return fg.run(device="cpu", **settings)


# -----------------------------------------------------------------------------
# loading

@pytest.mark.parametrize("task", list(fg.TASKS))
def test_loader_reads_each_tasks_real_format(tmp_path, task):
    expected = write_glue(str(tmp_path), [task], n_train=12, n_dev=6)[task]
    data = fg.load_task(task, str(tmp_path))
    assert set(data) == set(expected)
    for split, rows in expected.items():
        ex = data[split]
        assert ex.a == [a for a, _, _ in rows]
        assert ex.b == (None if rows[0][1] is None else [b for _, b, _ in rows])
        np.testing.assert_allclose(ex.labels, [y for _, _, y in rows])
        assert ex.labels.dtype == (np.float32 if task == "stsb" else np.int64)


def test_mnli_has_two_dev_sets_and_skips_unlabeled(tmp_path):
    write_glue(str(tmp_path), ["mnli"], n_train=6, n_dev=5)
    path = os.path.join(tmp_path, "MNLI", "dev_mismatched.tsv")
    with open(path, "a") as f:  # a pair without an annotator majority
        f.write("\t".join(["99", "1", "99n", "slate", "(", "(", "(", "(", "x y", "z w"] + ["neutral"] * 5 + ["-"]) + "\n")
    data = fg.load_task("mnli", str(tmp_path))
    assert set(data) == {"train", "mnli-m", "mnli-mm"}
    assert len(data["mnli-m"].a) == len(data["mnli-mm"].a) == 5
    assert data["train"].labels.tolist() == [0, 1, 2, 0, 1, 2]  # entailment, neutral, contradiction


def test_qqp_skips_a_few_broken_rows_but_not_a_wrong_file(tmp_path, capsys):
    write_glue(str(tmp_path), ["qqp"], n_train=20, n_dev=4)
    path = os.path.join(tmp_path, "QQP", "train.tsv")
    with open(path, "a") as f:
        f.write("999\t1\t2\tonly one question\n")
    assert len(fg.load_task("qqp", str(tmp_path))["train"].a) == 20
    assert "skipped 1 rows" in capsys.readouterr().out
    with open(path, "w") as f:
        f.write("\t".join(HEADERS["qqp"]) + "\n" + "".join(f"{i}\t1\t2\tq\n" for i in range(30)))
    with pytest.raises(CramError, match="fewer than 6 tab-separated fields"):
        fg.load_task("qqp", str(tmp_path))


def test_bad_label_and_bad_header_are_clear_errors(tmp_path):
    write_glue(str(tmp_path), ["rte"], n_train=4, n_dev=4)
    path = os.path.join(tmp_path, "RTE", "dev.tsv")
    with open(path, "a") as f:
        f.write("9\ta\tb\tmaybe\n")
    with pytest.raises(CramError, match=r"dev.tsv line 6: label 'maybe'"):
        fg.load_task("rte", str(tmp_path))
    with open(path, "w") as f:
        f.write("index\tpremise\thypothesis\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(CramError, match="no column 'sentence1'"):
        fg.load_task("rte", str(tmp_path))


def test_missing_files_name_both_ways_to_get_the_data(tmp_path):
    with pytest.raises(CramError) as e:
        fg.load_task("mnli", str(tmp_path))
    msg = str(e.value)
    assert "MNLI/train.tsv" in msg and "dev_matched.tsv" in msg and "--glue_dir" in msg and "nyu-mll/glue" in msg


def test_hub_path_maps_fields_and_splits(monkeypatch):
    import datasets

    def fake(name, config):
        assert (name, config) == ("nyu-mll/glue", "mnli")
        split = lambda n: datasets.Dataset.from_dict({"premise": [f" p{i} " for i in range(n)],  # noqa: E731
                                                      "hypothesis": [f"h{i}" for i in range(n)],
                                                      "label": [i % 3 for i in range(n)], "idx": list(range(n))})
        return datasets.DatasetDict(train=split(6), validation_matched=split(3), validation_mismatched=split(2))
    monkeypatch.setattr(datasets, "load_dataset", fake)
    data = fg.load_task("mnli")
    assert [len(data[k].a) for k in ("train", "mnli-m", "mnli-mm")] == [6, 3, 2]
    assert data["train"].a[1] == "p1" and data["train"].b[1] == "h1" and data["train"].labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_hub_failure_names_both_ways(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(CramError, match=r"nyu-mll/glue \(config 'rte'\).*--glue_dir=PATH.*RTE/train.tsv"):
        fg.load_task("rte")


REAL = os.path.join(SHARED, "glue")


@pytest.mark.skipif(not os.path.isdir(REAL), reason="../shared/glue not present")
@pytest.mark.parametrize("task,n_train,n_dev", [("cola", 8551, 1043), ("sst2", 67349, 872), ("mrpc", 3668, 408), ("rte", 2490, 277)])
def test_real_glue_files(task, n_train, n_dev):
    data = fg.load_task(task, REAL)
    assert (len(data["train"].a), len(data[task].a)) == (n_train, n_dev)
    for ex in data.values():
        assert len(ex.a) == len(ex.labels) and set(ex.labels.tolist()) == {0, 1} and all(ex.a)
    if task == "mrpc":  # the BOM did not eat the header, and the quoted string survived whole
        assert data["mrpc"].a[0].startswith("He said the foodservice pie business")
        assert data["mrpc"].b[0].startswith('"The foodservice pie business does not fit')
    if task == "rte":
        assert data["rte"].labels[0] == 1  # not_entailment, as on the hub


# -----------------------------------------------------------------------------
# tokens, batches, schedule, metrics

def test_encode_pairs_and_longest_first_truncation(tok):
    ex = fg.Examples(["hello world"], None, np.array([0]))
    assert [s.tolist() for s in fg.encode(tok, ex, 128)] == [[tok.cls_id] + tok.encode("hello world") + [tok.sep_id]]
    long_a, short_b = " ".join(["word"] * 200), "a short one"
    (ids,) = fg.encode(tok, fg.Examples([long_a], [short_b], np.array([0])), 32)
    ids = ids.tolist()
    b = tok.encode(short_b)
    assert len(ids) == 32 and ids[0] == tok.cls_id and ids[-len(b) - 2:] == [tok.sep_id] + b + [tok.sep_id]
    assert fg.truncate_pair([1] * 5, [2] * 5, 6) == ([1] * 3, [2] * 3)
    assert fg.truncate_pair([1] * 4, [2] * 4, 7) == ([1] * 4, [2] * 3)  # ties: b gives first
    assert fg.truncate_pair([1] * 9, [2] * 2, 6) == ([1] * 4, [2] * 2)


def test_collate_pads_to_the_batch_longest(tok):
    idx, mask = fg.collate([np.array([5, 6, 7], dtype=np.int32), np.array([8], dtype=np.int32)], tok.pad_id)
    assert idx.dtype == torch.long
    assert idx.tolist() == [[5, 6, 7], [8, tok.pad_id, tok.pad_id]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_metrics_against_hand_computed_values():
    preds, labels = [1, 0, 1, 1], [1, 0, 0, 1]  # tp 2, tn 1, fp 1, fn 0
    m = fg.compute_metrics(("accuracy", "f1", "mcc"), preds, labels)
    assert m["accuracy"] == pytest.approx(75.0)
    assert m["f1"] == pytest.approx(80.0)  # precision 2/3, recall 1
    assert m["mcc"] == pytest.approx(100 * 2 / math.sqrt(12))  # (2*1 - 1*0) / sqrt(3*2*1*2)
    r = fg.compute_metrics(("pearson", "spearman"), [1, 2, 3, 4], [2, 4, 6, 9])
    assert r["pearson"] == pytest.approx(100 * 11.5 / math.sqrt(5 * 26.75)) and r["spearman"] == pytest.approx(100.0)
    flat = fg.compute_metrics(("pearson", "spearman", "mcc", "f1"), [0, 0, 0], [0, 1, 0])
    assert flat == {"pearson": 0.0, "spearman": 0.0, "mcc": 0.0, "f1": 0.0}  # constant predictions: 0, not NaN


def test_glue_average_is_the_mean_of_nine_numbers():
    for label, row in fg.PAPER.items():  # the paper's own rows reproduce its averages
        assert round(fg.glue_average(row), 1) == row["avg"], label
    table = {r: float(i) for i, r in enumerate(fg._AVERAGED)}  # 0..8, MNLI m and mm counted separately
    assert fg.glue_average(table) == pytest.approx(4.0)
    del table["mnli-mm"]
    assert fg.glue_average(table) is None


def test_unknown_task_is_a_clear_error():
    with pytest.raises(CramError, match="unknown task 'mnlii'.*cola, sst2"):
        fg.resolve_tasks("mnlii")
    assert fg.resolve_tasks("all") == ["rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli"]
    assert fg.resolve_tasks("SST-2,wnli") == ["sst2", "wnli"]


def test_checkpoint_vocab_mismatch_is_a_clear_error(tmp_path, tok):
    cfg = BertConfig(vocab_size=50368, n_layer=1, n_head=2, n_embd=32, n_inner=64)
    path = str(tmp_path / "other.pt")
    save_checkpoint(path, {"model": Bert(cfg).state_dict(), "model_args": asdict(cfg), "meta": tok.meta(),
                           "step": 0, "tokens_seen": 0})
    with pytest.raises(CramError, match="vocab_size 50368 does not match"):
        fg.load_source(path)
    with pytest.raises(CramError, match="no such checkpoint"):
        fg.load_source(str(tmp_path / "missing.pt"))


def test_checkpoint_that_does_not_fit_is_refused_before_any_data_and_ignored_settings_are_named(tmp_path, tiny_ckpt, capsys):
    fork = load_checkpoint(tiny_ckpt)
    fork["model"]["blocks.0.attn.renamed.weight"] = fork["model"].pop("blocks.0.attn.qkv.weight")
    path = str(tmp_path / "fork.pt")
    save_checkpoint(path, fork)
    # refused before any data is read (here the hub, which would fail offline in another way)
    with pytest.raises(CramError, match=r"fork.pt: its weights do not fit this model.py \(missing \['blocks.0.attn.qkv"):
        run(task="mnli", ckpt=path, out_dir=str(tmp_path))
    # architecture settings a checkpoint overrides are named, not dropped in silence
    glue = str(tmp_path / "glue")
    write_glue(glue, ["rte"])
    res = run(task="rte", glue_dir=glue, ckpt=tiny_ckpt, out_dir=str(tmp_path), epochs=1, positions="alibi",
              n_layer=2, n_head=4)
    out = capsys.readouterr().out
    ignored = out.split("tiny.pt's; ignoring ")[1].splitlines()[0]
    assert "positions='alibi' (the checkpoint: 'sinusoid')" in ignored and "n_head=4 (the checkpoint: 2)" in ignored
    assert "n_layer" not in ignored  # 2 is the checkpoint's own
    assert res["model_args"]["positions"] == "sinusoid" and res["model_args"]["n_head"] == 2


# -----------------------------------------------------------------------------
# fine-tuning learns, and the script runs end to end

def synthetic(rng, n, regression):
    """Classification: does the sentence contain 'banana'. Regression: how many 'good's are in sentence a."""
    a, b, y = [], [], []
    for i in range(n):
        words = sentence(rng, 6).split()
        k = rng.randrange(4) if regression else i % 2
        for j in range(k if regression else 0):
            words[j] = "good"
        if not regression and k:
            words[rng.randrange(6)] = "banana"
        rng.shuffle(words)
        a.append(" ".join(words))
        b.append(sentence(rng))
        y.append(k)
    return fg.Examples(a, b if regression else None, np.array(y, dtype=np.float32 if regression else np.int64))


@pytest.mark.parametrize("task,metric,floor,kind", [("sst2", "accuracy", 95.0, "crammed"),
                                                    ("stsb", "pearson", 85.0, "crammed"),
                                                    ("sst2", "accuracy", 95.0, "bert")])
def test_tiny_pretrained_model_learns_a_synthetic_task(tiny_ckpt, bert_ckpt, tok, task, metric, floor, kind, capsys):
    rng = random.Random(0)
    state, args, tok, _ = fg.load_source(tiny_ckpt if kind == "crammed" else bert_ckpt)
    data = {"train": synthetic(rng, 192, task == "stsb"), task: synthetic(rng, 64, task == "stsb")}
    with configurator.overridden(vars(fg), learning_rate=3e-3, epochs=6, dropout=0.0):
        res = fg.run_task(task, data, tok, state, args, "cpu")
    assert "missing keys" not in capsys.readouterr().out  # every encoder weight came from the checkpoint
    assert res["median"][task][metric] > floor, res["runs"][0]["epochs"]
    assert len(res["runs"][0]["epochs"]) == 6 and res["runs"][0]["final"] == res["runs"][0]["epochs"][-1]["scores"]


def test_a_non_finite_gradient_skips_its_step_and_is_counted(tok):
    # the first step's gradient is made infinite: that update is skipped, the weights stay finite and learn on
    rng = random.Random(0)
    data = synthetic(rng, 32, False)
    seqs = fg.encode(tok, data, 64)
    args = dict(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32, n_inner=64)
    torch.manual_seed(0)
    model = fg.build_model(None, args, "sst2", "cpu")
    calls = []

    def first_step_infinite(grad):
        calls.append(1)
        return grad * math.inf if len(calls) == 1 else grad

    model.bert.ln_f.weight.register_hook(first_step_infinite)
    with configurator.overridden(vars(fg), epochs=1, batch_size=8, learning_rate=1e-3):
        history = fg.finetune(model, "sst2", (seqs, data.labels), {"sst2": (seqs, data.labels)}, tok.pad_id, 0,
                              "cpu", log=lambda msg: None)
    assert len(calls) == 4 and history[0]["skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_task_all_end_to_end_then_merge(tmp_path, tiny_ckpt):
    glue, out = str(tmp_path / "glue"), str(tmp_path / "out")
    write_glue(glue, fg.TASKS)
    cmd = [sys.executable, os.path.join(ROOT, "finetune_glue.py"), "--task=all", f"--glue_dir={glue}",
           f"--ckpt={tiny_ckpt}", f"--out_dir={out}", "--epochs=1", "--batch_size=8", "--device=cpu",
           "--num_threads=1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(os.path.join(out, "glue_results.json")) as f:
        res = json.load(f)
    assert sorted(res["tasks"]) == sorted(fg._SUITE) and sorted(res["scores"]) == sorted(fg._AVERAGED)
    assert res["glue_average"] == pytest.approx(np.mean([res["scores"][r] for r in fg._AVERAGED]))
    assert res["ckpt"] == tiny_ckpt and res["ckpt_step"] == 7 and res["settings"]["learning_rate"] == 4e-5
    rte = res["tasks"]["rte"]
    assert rte["seeds"] == [0] and rte["n_train"] == 16 and rte["n_dev"] == {"rte": 8}
    assert set(rte["runs"][0]["epochs"][0]["scores"]["rte"]) == {"accuracy"}
    assert set(res["tasks"]["mnli"]["median"]) == {"mnli-m", "mnli-mm"}
    assert "GLUE dev" in p.stdout and "BERT-base, fully trained" in p.stdout and "78.6" in p.stdout
    assert re.search(r"^mnli-mm +accuracy +[\d.]+ +[\d.]+", p.stdout, re.M) and re.search(r"^mrpc +f1 .* accuracy", p.stdout, re.M)
    # a later run on the same checkpoint adds its task to the same file: one table from runs one at a time
    run(task="wnli", glue_dir=glue, ckpt=tiny_ckpt, out_dir=out, epochs=1, batch_size=8, seeds=2)
    with open(os.path.join(out, "glue_results.json")) as f:
        merged = json.load(f)
    assert len(merged["tasks"]) == 9 and merged["tasks"]["wnli"]["seeds"] == [0, 1]
    assert merged["glue_average"] == pytest.approx(res["glue_average"])  # wnli is not averaged
    assert not os.path.exists(os.path.join(out, "glue_results.json.tmp"))
    # another recipe, or another checkpoint, is refused before any training: the file keeps its nine tasks
    with open(os.path.join(out, "glue_results.json")) as f:
        before = f.read()
    with pytest.raises(CramError, match=r"glue_results.json holds results of another recipe \(learning_rate\): "
                                        r"pass another --out_dir, or --overwrite=True"):
        run(task="wnli", glue_dir=glue, ckpt=tiny_ckpt, out_dir=out, epochs=1, batch_size=8, learning_rate=1e-4)
    copy = str(tmp_path / "retrained.pt")
    shutil.copy(tiny_ckpt, copy)
    with pytest.raises(CramError, match=r"holds results of another checkpoint \(.*tiny.pt, step 7\)"):
        run(task="wnli", glue_dir=glue, ckpt=copy, out_dir=out, epochs=1, batch_size=8)
    with open(os.path.join(out, "glue_results.json")) as f:
        assert f.read() == before
    # a checkpoint retrained at the same path, step and shape is another model: its results are not merged
    run(task="wnli", glue_dir=glue, ckpt=copy, out_dir=out, epochs=1, batch_size=8, overwrite=True)
    retrained = load_checkpoint(tiny_ckpt)
    retrained["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in retrained["model"].items()}
    save_checkpoint(copy, retrained)
    with pytest.raises(CramError, match="holds results of another checkpoint"):
        run(task="rte", glue_dir=glue, ckpt=copy, out_dir=out, epochs=1, batch_size=8)
    run(task="rte", glue_dir=glue, ckpt=copy, out_dir=out, epochs=1, batch_size=8, overwrite=True)
    with open(os.path.join(out, "glue_results.json")) as f:
        assert list(json.load(f)["tasks"]) == ["rte"]


def test_ckpt_none_and_up_front_file_check(tmp_path):
    glue = str(tmp_path / "glue")
    write_glue(glue, ["rte"])
    with pytest.raises(CramError, match="CoLA/train.tsv"):  # rte exists, cola does not: fail before training rte
        run(task="rte,cola", glue_dir=glue, ckpt="none", out_dir=str(tmp_path))
    res = run(task="rte", glue_dir=glue, ckpt="none", out_dir=str(tmp_path), epochs=1,
              n_layer=1, n_head=2, n_embd=32, n_inner=64, positions="alibi")
    # the baseline takes the architecture switches too: the fair random start of an alibi checkpoint
    assert res["ckpt"] == "none" and "rte" in res["scores"]
    assert res["model_args"]["n_embd"] == 32 and res["model_args"]["positions"] == "alibi"
    with open(os.path.join(glue, "RTE", "dev.tsv")) as f:
        header = f.readline()
    with open(os.path.join(glue, "RTE", "dev.tsv"), "w") as f:
        f.write(header)  # a header and no rows
    with pytest.raises(CramError, match="holds results of a random init of another shape"):
        run(task="rte", glue_dir=glue, ckpt="none", out_dir=str(tmp_path), n_layer=1, n_head=2,
            n_embd=32, n_inner=64)
    with pytest.raises(CramError, match=r"rte: no examples in rte \(from .*RTE\); check the task's files"):
        run(task="rte", glue_dir=glue, ckpt="none", out_dir=str(tmp_path / "other"), n_layer=1, n_head=2,
            n_embd=32, n_inner=64)
    # a bad shape is refused before any data is read (here the hub, which would fail offline in another way)
    with pytest.raises(CramError, match="--n_embd=100 is not a multiple of --n_head=3"):
        run(task="mnli", ckpt="none", out_dir=str(tmp_path), n_embd=100, n_head=3)
