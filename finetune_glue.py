"""
Fine-tune the pretrained crammed BERT on GLUE and report dev scores, with the paper's recipe for every task
(Geiping & Goldstein, "Cramming", arXiv 2212.14034): AdamW 4e-5, batch 16, 5 epochs, warmup + cosine decay.

    python finetune_glue.py --task=mnli                          # one task, data from the HF hub (nyu-mll/glue)
    python finetune_glue.py --task=all --seeds=5                 # the paper's suite, median of 5 seeds, GLUE table
    python finetune_glue.py --task=rte --glue_dir=../shared/glue --ckpt=none   # local TSVs, no-pretraining baseline

Tasks are the hub's config names: cola sst2 mrpc stsb qqp mnli qnli rte wnli (comma-separated lists work too);
`all` is the paper's eight, without wnli. Results go to out_dir/glue_results.json, merged with earlier runs
of the same checkpoint so that tasks run one at a time still add up to one GLUE table.
"""
import hashlib
import json
import math
import os
import random
import sys
import time
from collections import namedtuple

import numpy as np
import torch

import configurator
from configurator import CramError, require_at_least
from model import (BertConfig, BertForSequenceClassification, amp_context, autocast_dtype, grad_scaler, learning_rate_at,
                   load_checkpoint, pick_device, to_device)
from prepare import Tokenizer

# -----------------------------------------------------------------------------
# settings: override with a config file or --key=value (see configurator.py)
task = "all"  # a task name, a comma-separated list, or "all" (the paper's eight: everything but wnli)
ckpt = "out/ckpt.pt"  # the pretrained checkpoint; "none" fine-tunes a randomly initialised model (the baseline)
glue_dir = None  # None: the HF hub's nyu-mll/glue; else a folder in the GLUE distribution's layout (PATH/RTE/train.tsv)
out_dir = "out"  # glue_results.json goes here
device = "auto"  # auto | cuda | mps | cpu
dtype = "auto"  # autocast: auto = bf16 where the hardware has it, fp16 on older CUDA GPUs, else float32
seed = 0
seeds = 1  # > 1 repeats each task with seeds seed, seed+1, ... and reports the median, as the paper does (5)
epochs = 5
batch_size = 16
eval_batch_size = 128  # evaluation holds no activations for backward, so it affords bigger batches
learning_rate = 4e-5
betas = (0.9, 0.98)
eps = 1e-6
weight_decay = 0.0
warmup_fraction = 0.1  # linear warmup over this share of the steps, then cosine decay to 0
grad_clip = 0.0  # clip the gradient norm to this; 0 = off (the paper's recipe does not clip)
dropout = 0.1  # fine-tuning dropout; pretraining ran without
max_seq_len = 128  # tokens per example including [CLS]/[SEP]; pairs are truncated longest-first
max_train_examples = 0  # > 0: fine-tune on a seeded random subset of this many training examples (quick runs)
num_threads = 0  # torch CPU threads; 0 = torch's default
# the model's shape when ckpt="none" (with a checkpoint the shape and the tokenizer come from it): the paper's 16x768
tokenizer = "gpt2"
n_layer = 16
n_head = 12
n_embd = 768
n_inner = 3072

# -----------------------------------------------------------------------------
# the tasks. Both sources are mapped onto the hub's conventions (fields, label ids) so a score means the same
# whichever fed it. tsv = (text a, text b, label) by header name, or by position for CoLA, which ships headerless.
_NLI2, _NLI3 = ("entailment", "not_entailment"), ("entailment", "neutral", "contradiction")
TASKS = {
    "cola": dict(folder="CoLA", hub=("sentence", None), tsv=(3, None, 1), labels=2, metrics=("mcc",)),
    "sst2": dict(folder="SST-2", hub=("sentence", None), tsv=("sentence", None, "label"), labels=2, metrics=("accuracy",)),
    "mrpc": dict(folder="MRPC", hub=("sentence1", "sentence2"), tsv=("#1 String", "#2 String", "Quality"), labels=2,
                 metrics=("f1", "accuracy")),
    "stsb": dict(folder="STS-B", hub=("sentence1", "sentence2"), tsv=("sentence1", "sentence2", "score"), labels=1,
                 metrics=("pearson", "spearman")),  # labels=1: regression on the 0-5 similarity score
    "qqp": dict(folder="QQP", hub=("question1", "question2"), tsv=("question1", "question2", "is_duplicate"), labels=2,
                metrics=("f1", "accuracy")),
    "mnli": dict(folder="MNLI", hub=("premise", "hypothesis"), tsv=("sentence1", "sentence2", "gold_label"), labels=_NLI3,
                 metrics=("accuracy",),
                 dev={"mnli-m": ("validation_matched", "dev_matched.tsv"),
                      "mnli-mm": ("validation_mismatched", "dev_mismatched.tsv")}),
    "qnli": dict(folder="QNLI", hub=("question", "sentence"), tsv=("question", "sentence", "label"), labels=_NLI2,
                 metrics=("accuracy",)),
    "rte": dict(folder="RTE", hub=("sentence1", "sentence2"), tsv=("sentence1", "sentence2", "label"), labels=_NLI2,
                metrics=("accuracy",)),
    "wnli": dict(folder="WNLI", hub=("sentence1", "sentence2"), tsv=("sentence1", "sentence2", "label"), labels=2,
                 metrics=("accuracy",)),
}
_SUITE = ("rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli")  # `all`, small tasks first: early results
_HUB = "nyu-mll/glue"
# the nine numbers the GLUE average is the plain mean of (MNLI counts twice), in the paper's table order
_AVERAGED = ("mnli-m", "mnli-mm", "sst2", "stsb", "rte", "qnli", "qqp", "mrpc", "cola")

# GLUE-dev, medians of 5 fine-tuning seeds, x100. v1: the HF model card JonasGeiping/crammed-bert-legacy (= the paper's
# v1 Table 3); BERT rows: v1 Table 3 as quoted in public write-ups; v2: the card JonasGeiping/crammed-bert, which used
# the best of its 5 pretraining runs where the paper took the median. Each row's mean reproduces its stated average.
PAPER = {
    "crammed BERT, 1 day A6000 (v1)": dict(zip(_AVERAGED, (83.9, 84.1, 92.2, 84.6, 53.8, 89.5, 87.3, 87.5, 44.5)), avg=78.6),
    "crammed BERT, 1 day A6000 (v2)": dict(zip(_AVERAGED, (84.1, 84.6, 92.0, 87.4, 58.5, 90.2, 87.5, 88.9, 53.3)), avg=80.7),
    "BERT-base, fully trained": dict(zip(_AVERAGED, (83.2, 83.4, 91.9, 86.7, 59.2, 90.6, 87.7, 89.3, 56.5)), avg=80.9),
    "BERT-base, no pretraining": dict(zip(_AVERAGED, (34.1, 34.1, 79.9, 17.8, 47.3, 50.0, 68.6, 77.9, 0.0)), avg=45.5),
}

Examples = namedtuple("Examples", "a b labels")  # texts a, texts b (None for one-sentence tasks), labels


def default_settings():
    return {k: globals()[k] for k in configurator.settings_of(globals())}


def resolve_tasks(name):
    if name == "all":
        return list(_SUITE)
    names = [n.strip().lower().replace("-", "") for n in name.split(",") if n.strip()]  # SST-2 -> sst2 too
    for n in names:
        if n not in TASKS:
            raise CramError(f"--task={name}: unknown task '{n}'; choose from {', '.join(TASKS)}, or all")
    if not names:
        raise CramError(f"--task={name!r}: name a task ({', '.join(TASKS)}) or all")
    return names


def dev_sets(name):
    """{table row: (hub split, tsv file)}: one dev set per task, but MNLI's matched and mismatched."""
    return TASKS[name].get("dev", {name: ("validation", "dev.tsv")})


def parse_label(name, raw):
    labels = TASKS[name]["labels"]
    if labels == 1:
        return float(raw)
    if isinstance(labels, tuple):
        return labels.index(raw)
    if int(raw) not in range(labels):
        raise ValueError(raw)
    return int(raw)


# -----------------------------------------------------------------------------
# loading: the GLUE distribution's TSVs, or the HF hub

def read_tsv(path):
    """(line number, fields) per non-empty line. Split on tabs only: the files hold unbalanced quotes that csv
    quoting would follow across lines. utf-8-sig drops MRPC's byte-order mark, which would stick to its header."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = f.read().split("\n")  # not splitlines(): that also breaks on \x0b, \x1c, \u2028 inside sentences
    return [(i, line.rstrip("\r").split("\t")) for i, line in enumerate(lines, 1) if line.strip()]


def load_tsv(name, path):
    rows = read_tsv(path)
    cols = TASKS[name]["tsv"]
    if isinstance(cols[0], str):  # look columns up by header name: MNLI's files have a dozen, in varying order
        header = rows.pop(0)[1] if rows else []
        missing = [c for c in cols if c is not None and c not in header]
        if missing:
            raise CramError(f"{path}: no column {', '.join(map(repr, missing))} in the header row; "
                            f"expected the GLUE distribution's {TASKS[name]['folder']} file")
        cols = [None if c is None else header.index(c) for c in cols]
    ia, ib, il = cols
    width = max(c for c in cols if c is not None) + 1
    a, b, labels, short = [], [], [], 0
    for lineno, fields in rows:
        if len(fields) < width:  # QQP's train.tsv ships a few broken rows; skip them, but not a whole wrong file
            short += 1
            continue
        if name == "mnli" and fields[il] == "-":  # no annotator majority: unlabeled, as on the hub
            continue
        try:
            labels.append(parse_label(name, fields[il]))
        except ValueError:
            raise CramError(f"{path} line {lineno}: label {fields[il]!r} is not a valid {name} label "
                            f"({TASKS[name]['labels']}); is this the GLUE distribution's file?")
        a.append(fields[ia].strip())
        b.append(fields[ib].strip() if ib is not None else None)
    if short:
        print(f"{path}: skipped {short} rows with fewer than {width} tab-separated fields")
        if short > max(10, len(rows) // 100):
            raise CramError(f"{path}: {short} of {len(rows)} rows have fewer than {width} tab-separated fields; "
                            f"expected the GLUE distribution's {TASKS[name]['folder']} file")
    return Examples(a, b if ib is not None else None, np.array(labels, dtype=np.float32 if TASKS[name]["labels"] == 1 else np.int64))


def task_files(name, root):
    folder = os.path.join(root, TASKS[name]["folder"])
    return {"train": os.path.join(folder, "train.tsv"), **{row: os.path.join(folder, f) for row, (_, f) in dev_sets(name).items()}}


def check_files(name, root):
    missing = [p for p in task_files(name, root).values() if not os.path.isfile(p)]
    if missing:
        raise CramError(f"{name}: {', '.join(missing)} not found: put the GLUE distribution's "
                        f"{TASKS[name]['folder']}/ folder under --glue_dir={root}, or leave out --glue_dir "
                        f"to load the HF hub dataset {_HUB} (config '{name}')")


def load_hub(name):
    try:
        from datasets import load_dataset
        ds = load_dataset(_HUB, name)
    except Exception as e:  # offline, a missing package, a hub outage: all end the same way
        raise CramError(f"{name}: could not load the HF hub dataset {_HUB} (config '{name}'): "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; without network pass "
                        f"--glue_dir=PATH holding the GLUE distribution's files, e.g. PATH/{TASKS[name]['folder']}/train.tsv and dev.tsv")
    ka, kb = TASKS[name]["hub"]
    dtype = np.float32 if TASKS[name]["labels"] == 1 else np.int64

    def split(s):
        d = ds[s]
        return Examples([t.strip() for t in d[ka]], [t.strip() for t in d[kb]] if kb else None, np.array(d["label"], dtype=dtype))
    return {"train": split("train"), **{row: split(s) for row, (s, _) in dev_sets(name).items()}}


def load_task(name, root=None):
    """{"train": Examples, dev row: Examples, ...} from --glue_dir if given, else from the hub."""
    if root is None:
        return load_hub(name)
    check_files(name, root)
    return {key: load_tsv(name, path) for key, path in task_files(name, root).items()}


def subsample(ex, k, seed):
    if not k or k >= len(ex.a):
        return ex
    idx = sorted(random.Random(seed).sample(range(len(ex.a)), k))  # same subset for every fine-tuning seed
    return Examples([ex.a[i] for i in idx], [ex.b[i] for i in idx] if ex.b is not None else None, ex.labels[idx])


# -----------------------------------------------------------------------------
# tokens and batches

def truncate_pair(a, b, budget):
    """Longest-first, like BERT: drop tokens from the end of the longer text (b on ties) until both fit."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return a, b


def encode(tok, ex, max_seq_len):
    """[CLS] a [SEP] or [CLS] a [SEP] b [SEP], at most max_seq_len tokens. Done once per task, shared by all seeds;
    int32 arrays, because lists of Python ints for MNLI's 393k pairs would take the better part of a GB."""
    out = []
    for i, text in enumerate(ex.a):
        a = tok.encode(text)
        if ex.b is None:
            ids = [tok.cls_id] + a[:max_seq_len - 2] + [tok.sep_id]
        else:
            a, b = truncate_pair(a, tok.encode(ex.b[i]), max_seq_len - 3)
            ids = [tok.cls_id] + a + [tok.sep_id] + b + [tok.sep_id]
        out.append(np.array(ids, dtype=np.int32))
    return out


def collate(seqs, pad_id):
    """Pad to the batch's longest, not to max_seq_len: most GLUE examples are far shorter, and padding costs compute."""
    idx = torch.full((len(seqs), max(map(len, seqs))), pad_id, dtype=torch.long)
    mask = torch.zeros(idx.shape, dtype=torch.long)
    for i, s in enumerate(seqs):
        idx[i, :len(s)] = torch.as_tensor(s)
        mask[i, :len(s)] = 1
    return idx, mask


# -----------------------------------------------------------------------------
# metrics, as percentages like the paper's tables

def compute_metrics(names, preds, labels):
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
    preds, labels, out = np.asarray(preds), np.asarray(labels), {}
    for m in names:
        if m in ("pearson", "spearman"):
            # a constant prediction has no correlation: score it 0, as sklearn's MCC does, instead of NaN
            flat = len(preds) < 2 or np.ptp(preds) == 0 or np.ptp(labels) == 0
            v = 0.0 if flat else (pearsonr if m == "pearson" else spearmanr)(preds, labels)[0]
        else:
            v = {"accuracy": lambda: accuracy_score(labels, preds), "mcc": lambda: matthews_corrcoef(labels, preds),
                 "f1": lambda: f1_score(labels, preds, zero_division=0.0)}[m]()  # F1 of class 1, as GLUE scores it
        out[m] = 100.0 * float(v)
    return out


def glue_average(scores):
    """The mean of the nine numbers (MNLI matched and mismatched separately); None until all nine are in."""
    if not all(r in scores for r in _AVERAGED):
        return None
    return sum(scores[r] for r in _AVERAGED) / len(_AVERAGED)


# -----------------------------------------------------------------------------
# fine-tuning

@torch.no_grad()
def predict(model, seqs, pad_id, regression, batch, device, ctx):
    """Predictions in the original order; batches are sorted by length so that little compute goes to padding."""
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = np.zeros(len(seqs), dtype=np.float64 if regression else np.int64)
    for i in range(0, len(order), batch):
        ids = order[i:i + batch]
        idx, mask = collate([seqs[j] for j in ids], pad_id)
        with ctx:
            logits, _ = model(to_device(idx, device), attention_mask=to_device(mask, device))
        logits = logits.float()
        out[ids] = (logits[:, 0] if regression else logits.argmax(-1)).cpu().numpy()
    return out


def finetune(model, name, train, devs, pad_id, hp, run_seed, device, dtype=torch.float32, log=print):
    """Fine-tune on train = (seqs, labels), score every dev row = {row: (seqs, labels)} after each epoch, under
    autocast to dtype. Returns the per-epoch scores and mean training losses; the last epoch's are the result."""
    device_type = torch.device(device).type  # cuda:1 -> cuda
    ctx = amp_context(device_type, dtype)
    opt = model.configure_optimizers(hp["weight_decay"], hp["learning_rate"], tuple(hp["betas"]), hp["eps"], device_type)
    scaler = grad_scaler(device_type, dtype)
    regression = TASKS[name]["labels"] == 1
    seqs, labels = train
    labels = torch.as_tensor(labels, dtype=torch.float32 if regression else torch.long)
    bs, n = hp["batch_size"], len(seqs)
    per_epoch = math.ceil(n / bs)
    total = hp["epochs"] * per_epoch
    gen = torch.Generator().manual_seed(run_seed)
    history, step = [], 0
    for epoch in range(1, hp["epochs"] + 1):
        model.train()
        order, loss_sum, t0, shown = torch.randperm(n, generator=gen), torch.zeros((), device=device), time.time(), 0.0
        for k, i in enumerate(range(0, n, bs), 1):
            ids = order[i:i + bs]
            idx, mask = collate([seqs[j] for j in ids.tolist()], pad_id)
            for group in opt.param_groups:
                # linear warmup then cosine decay to 0: train.py's cosine schedule, over steps (+1: no zero-lr step)
                group["lr"] = learning_rate_at((step + 1) / (total + 1), "cosine", hp["learning_rate"], hp["warmup_fraction"])
            with ctx:
                _, loss = model(to_device(idx, device), attention_mask=to_device(mask, device),
                                labels=to_device(labels[ids], device))
            scaler.scale(loss).backward()
            if hp["grad_clip"]:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            loss_sum += loss.detach().float()
            step += 1
            if time.time() - shown > 0.5 or k == per_epoch:  # reading the loss syncs the GPU: not every step
                shown = time.time()
                msg = (f"{name} seed {run_seed} epoch {epoch}/{hp['epochs']} step {k}/{per_epoch} "
                       f"loss {loss_sum.item() / k:.4f} {shown - t0:.0f}s")
                sys.stderr.write(f"\r{msg:<79}")
                sys.stderr.flush()
        sys.stderr.write("\r" + " " * max(79, len(msg)) + "\r")
        scores = {row: compute_metrics(TASKS[name]["metrics"], predict(model, s, pad_id, regression, hp["eval_batch_size"], device, ctx), y)
                  for row, (s, y) in devs.items()}
        history.append({"epoch": epoch, "train_loss": loss_sum.item() / per_epoch, "scores": scores})
        log(f"{name} seed {run_seed} epoch {epoch}/{hp['epochs']}: "
            + "; ".join(f"{row} " + " ".join(f"{m} {v:.2f}" for m, v in sc.items()) for row, sc in scores.items())
            + f" | train loss {loss_sum.item() / per_epoch:.4f} | {time.time() - t0:.1f}s")
    return history


# -----------------------------------------------------------------------------
# the checkpoint, the model, the run

def load_source(cfg):
    """(pretrained state dict or None, model_args, tokenizer, info for the results) from --ckpt."""
    if cfg["ckpt"] == "none":  # the baseline: the same recipe without pretraining, shape from the settings
        tok = Tokenizer(cfg["tokenizer"])
        args = dict(vocab_size=tok.vocab_size, block_size=cfg["max_seq_len"], n_layer=cfg["n_layer"],
                    n_head=cfg["n_head"], n_embd=cfg["n_embd"], n_inner=cfg["n_inner"])
        BertConfig(**args, dropout=cfg["dropout"])  # a bad shape is refused now, not after the data is tokenized
        return None, args, tok, {"ckpt": "none", "ckpt_step": 0, "tokens_seen": 0, "model_args": args,
                                 "weights_checksum": None}
    ck = load_checkpoint(cfg["ckpt"])
    tok = Tokenizer.from_meta(ck["meta"], source=cfg["ckpt"])
    args = dict(ck["model_args"])
    if args.get("vocab_size") != tok.vocab_size:
        raise CramError(f"{cfg['ckpt']}: the model's vocab_size {args.get('vocab_size')} does not match its tokenizer "
                        f"'{tok.name}' ({tok.vocab_size}); this checkpoint was not written by this version of cram's train.py")
    if cfg["max_seq_len"] > args.get("block_size", 128):
        raise CramError(f"--max_seq_len={cfg['max_seq_len']} exceeds the checkpoint's block_size {args.get('block_size')}: "
                        f"pass --max_seq_len={args.get('block_size')} or less")
    # tells a retrained checkpoint at the same path and step from the one earlier results came from (a hash
    # of the bytes: a float sum differs in its last digit with the number of threads)
    digest = hashlib.sha256()
    for key in sorted(ck["model"]):
        digest.update(key.encode() + ck["model"][key].contiguous().flatten().view(torch.uint8).numpy().tobytes())
    checksum = digest.hexdigest()[:16]
    return ck["model"], args, tok, {"ckpt": cfg["ckpt"], "ckpt_step": ck.get("step"),
                                    "tokens_seen": ck.get("tokens_seen"), "model_args": args,
                                    "weights_checksum": checksum}


def build_model(state, args, name, cfg, device):
    labels = TASKS[name]["labels"]
    model = BertForSequenceClassification(BertConfig(**{**args, "dropout": cfg["dropout"]}),
                                          labels if isinstance(labels, int) else len(labels))
    if state is not None:
        model.load_pretrained(state)
    return model.to(device)


def run_task(name, data, tok, state, args, cfg, device, dtype=torch.float32):
    """Fine-tune one task with each seed; the result keeps every epoch of every seed and the seeds' median."""
    t0 = time.time()
    train = subsample(data["train"], cfg["max_train_examples"], cfg["seed"])
    empty = [split for split, ex in data.items() if not ex.a]
    if empty:
        where = os.path.join(cfg["glue_dir"], TASKS[name]["folder"]) if cfg["glue_dir"] else f"the hub ({_HUB})"
        raise CramError(f"{name}: no examples in {', '.join(empty)} (from {where}); check the task's files")
    sizes = ", ".join(f"{row} {len(ex.a)}" for row, ex in data.items() if row != "train")
    print(f"{name}: {len(train.a)} training examples"
          + (f" (of {len(data['train'].a)}, --max_train_examples)" if len(train.a) < len(data["train"].a) else "")
          + f"; dev: {sizes}")
    train_set = (encode(tok, train, cfg["max_seq_len"]), train.labels)
    devs = {row: (encode(tok, ex, cfg["max_seq_len"]), ex.labels) for row, ex in data.items() if row != "train"}
    runs = []
    for s in range(cfg["seed"], cfg["seed"] + cfg["seeds"]):
        t1 = time.time()
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)  # the classifier head's init and the dropout masks
        model = build_model(state, args, name, cfg, device)
        history = finetune(model, name, train_set, devs, tok.pad_id, cfg, s, device, dtype)
        runs.append({"seed": s, "epochs": history, "final": history[-1]["scores"], "seconds": time.time() - t1})
        del model
    # the score is the last epoch's (no picking the best epoch on dev), the median over seeds
    median = {row: {m: float(np.median([r["final"][row][m] for r in runs])) for m in TASKS[name]["metrics"]} for row in devs}
    recipe = ("epochs", "batch_size", "learning_rate", "betas", "eps", "weight_decay", "warmup_fraction", "grad_clip",
              "dropout", "max_seq_len", "max_train_examples")
    return {"seeds": [r["seed"] for r in runs], "median": median, "seconds": time.time() - t0, "n_train": len(train.a),
            "n_dev": {row: len(d[0]) for row, d in devs.items()}, "settings": {k: cfg[k] for k in recipe}, "runs": runs}


def main_scores(tasks):
    """{table row: main metric} over the tasks' results; the first metric listed is the task's main one."""
    return {row: med[TASKS[name]["metrics"][0]] for name, res in tasks.items() for row, med in res["median"].items()}


def write_json(path, obj):
    tmp = path + ".tmp"  # a crash mid-write leaves the previous file whole
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def earlier_tasks(path, info):
    """Results already in glue_results.json for the same checkpoint (path, step, shape, weights): kept and merged."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return {}
    if (os.path.abspath(str(old.get("ckpt"))) == os.path.abspath(str(info["ckpt"]))
            and old.get("ckpt_step") == info["ckpt_step"] and old.get("model_args") == info["model_args"]
            and old.get("weights_checksum") == info["weights_checksum"]):
        return old.get("tasks", {})
    print(f"{path} holds results of another checkpoint ({old.get('ckpt')}, step {old.get('ckpt_step')}): replacing it")
    return {}


def format_tables(results, ran):
    """The per-run table (task, metric, score, seconds) and the GLUE table beside the paper's rows."""
    lines = [f"{'task':<9}{'metric':<10}{'score':>8}{'seconds':>10}   also"]
    for name in ran:
        res = results["tasks"][name]
        main, *rest = TASKS[name]["metrics"]
        for row, med in res["median"].items():
            also = " ".join(f"{m} {med[m]:.2f}" for m in rest)
            lines.append(f"{row:<9}{main:<10}{med[main]:>8.2f}{res['seconds']:>10.1f}   {also}".rstrip())
    seeds = {len(res["seeds"]) for res in results["tasks"].values()}
    lines += ["", f"GLUE dev ({'median of %d seeds' % max(seeds) if max(seeds) > 1 else 'one seed'}; "
              f"MNLI m/mm, MRPC/QQP F1, STS-B Pearson, CoLA MCC; x100)"]
    head = f"{'':<34}" + "".join(f"{r:>8}" for r in _AVERAGED) + f"{'avg':>8}"
    scores, avg = main_scores(results["tasks"]), results["glue_average"]
    ours = f"{'this run: ' + os.path.basename(str(results['ckpt'])):<34.34}" + "".join(
        f"{scores[r]:>8.1f}" if r in scores else f"{'-':>8}" for r in _AVERAGED) + (f"{avg:>8.1f}" if avg is not None else f"{'-':>8}")
    paper = [f"{label:<34}" + "".join(f"{row[r]:>8.1f}" for r in _AVERAGED) + f"{row['avg']:>8.1f}" for label, row in PAPER.items()]
    return "\n".join(lines + [head, ours] + paper)


def run(cfg):
    """The script, callable from tests: fine-tune the tasks cfg['task'] names, write the JSON, return the results."""
    names = resolve_tasks(cfg["task"])
    require_at_least(1, **{k: cfg[k] for k in ("seeds", "epochs", "batch_size", "eval_batch_size")})
    require_at_least(8, max_seq_len=cfg["max_seq_len"])
    configurator.require_folder("out_dir", cfg["out_dir"])
    if cfg["glue_dir"] is not None:  # find every missing file now, not hours in after the first tasks ran
        for name in names:
            check_files(name, cfg["glue_dir"])
    if cfg["num_threads"]:
        torch.set_num_threads(cfg["num_threads"])
    dev, dev_type = pick_device(cfg["device"])
    dtype = autocast_dtype(dev_type, cfg["dtype"])  # AMP on GPUs: bf16, or fp16 with loss scaling
    state, args, tok, info = load_source(cfg)
    print(f"fine-tuning {cfg['ckpt']} (step {info['ckpt_step']}, {args}) on {', '.join(names)} with {dev} "
          f"({str(dtype).split('.')[-1]}); data from "
          + (cfg["glue_dir"] or f"the HF hub ({_HUB})"))
    os.makedirs(cfg["out_dir"], exist_ok=True)
    path = os.path.join(cfg["out_dir"], "glue_results.json")
    tasks = earlier_tasks(path, info)
    if tasks:
        print(f"merging with earlier results in {path} for this checkpoint: {', '.join(t for t in tasks if t not in names) or 'none kept'}")
    results = {}
    for name in names:
        tasks[name] = run_task(name, load_task(name, cfg["glue_dir"]), tok, state, args, cfg, dev, dtype)
        results = {**info, "device": dev, "settings": cfg, "tasks": tasks, "scores": main_scores(tasks),
                   "glue_average": glue_average(main_scores(tasks))}
        write_json(path, results)  # after every task: a late crash keeps what finished
    print("\n" + format_tables(results, names))
    print(f"\nwrote {path}")
    return results


if __name__ == "__main__":
    config = configurator.configure(globals())
    run(config)
