"""
Fine-tune the pretrained crammed BERT on GLUE and report dev scores, with the paper's recipe for
every task (Geiping & Goldstein, "Cramming", arXiv 2212.14034): AdamW 4e-5, batch 16, 5 epochs,
warmup and cosine decay.

    python finetune_glue.py --task=mnli                    # one task, data from the HF hub
    python finetune_glue.py --task=all --seeds=5           # the paper's suite, median of 5 seeds
    python finetune_glue.py --task=rte --glue_dir=../shared/glue --ckpt=none --out_dir=out-random
    python finetune_glue.py config/glue_cpu.py --ckpt=out-cpu/ckpt.pt --out_dir=out-cpu

Tasks are the hub's config names: cola sst2 mrpc stsb qqp mnli qnli rte wnli (comma-separated lists
work too); `all` is the paper's eight, without wnli. Results go to out_dir/glue_results.json, merged
with earlier runs of the same checkpoint and recipe, so that tasks run one at a time add up to one
GLUE table; a file of another checkpoint or recipe is refused (--overwrite=True replaces it).
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
from model import Bert, BertForSequenceClassification, configure_optimizer
from prepare import Tokenizer
from runtime import (amp_context, autocast_dtype, bert_config, check_weights, dtype_name,
                     grad_scaler, load_checkpoint, load_weights, model_settings, pick_device,
                     to_device, train_step, warmup_cosine)

# -----------------------------------------------------------------------------
# settings: override with a config file or --key=value (see configurator.py)
task = "all"  # a task, a comma-separated list, or "all" (the paper's eight: all but wnli)
ckpt = "out/ckpt.pt"  # the pretrained checkpoint; "none" fine-tunes a random init (the baseline)
glue_dir = None  # None: the HF hub's nyu-mll/glue; else a folder laid out as GLUE ships (RTE/...)
out_dir = "out"  # glue_results.json goes here; runs of the same checkpoint and recipe add to it
overwrite = False  # replace a glue_results.json of another checkpoint or recipe (else refused)
device = "auto"  # auto | cuda | mps | cpu
dtype = "auto"  # autocast: bf16 where the hardware does bf16 math, fp16 on older GPUs, else fp32
seed = 0
seeds = 1  # > 1 repeats each task with seeds seed, seed+1, ... and reports the median (paper: 5)
epochs = 5
batch_size = 16
eval_batch_size = 128  # evaluation holds no activations for backward: it affords bigger batches
learning_rate = 4e-5
betas = (0.9, 0.98)
eps = 1e-6
weight_decay = 0.0
warmup_fraction = 0.1  # linear warmup over this share of the steps, then cosine decay to 0
grad_clip = 0.0  # clip the gradient norm to this; 0 = off (the paper's recipe does not clip)
dropout = 0.1  # fine-tuning dropout; pretraining runs without
max_seq_len = 128  # tokens per example including [CLS]/[SEP]; pairs are truncated longest-first
max_train_examples = 0  # > 0: fine-tune on a seeded random subset of this many (quick runs)
num_threads = 0  # torch CPU threads; 0 = torch's default
# the model when ckpt="none" (a checkpoint brings its own): the tokenizer and every BertConfig field
# as a setting of the same name, as in train.py, so that the baseline of an alibi or post-LN
# checkpoint has its architecture too (e.g. --n_layer=4 --positions=alibi); not these three:
tokenizer = "gpt2"
_NOT_SETTINGS = ("vocab_size", "block_size", "dropout")  # the tokenizer's; max_seq_len; dropout
globals().update({k: v for k, v in model_settings().items() if k not in _NOT_SETTINGS})
# -----------------------------------------------------------------------------

# the tasks. Both sources are mapped onto the hub's conventions (fields, label ids), so that a score
# means the same whichever fed it. tsv = (text a, text b, label) by header name, or by position for
# CoLA, which ships headerless. labels: their number, or their names in the hub's order
_NLI2 = ("entailment", "not_entailment")
_NLI3 = ("entailment", "neutral", "contradiction")
TASKS = {
    "cola": dict(folder="CoLA", hub=("sentence", None), tsv=(3, None, 1), labels=2,
                 metrics=("mcc",)),
    "sst2": dict(folder="SST-2", hub=("sentence", None), tsv=("sentence", None, "label"), labels=2,
                 metrics=("accuracy",)),
    "mrpc": dict(folder="MRPC", hub=("sentence1", "sentence2"),
                 tsv=("#1 String", "#2 String", "Quality"), labels=2, metrics=("f1", "accuracy")),
    # labels=1: regression on the 0-5 similarity score
    "stsb": dict(folder="STS-B", hub=("sentence1", "sentence2"),
                 tsv=("sentence1", "sentence2", "score"), labels=1,
                 metrics=("pearson", "spearman")),
    "qqp": dict(folder="QQP", hub=("question1", "question2"),
                tsv=("question1", "question2", "is_duplicate"), labels=2,
                metrics=("f1", "accuracy")),
    "mnli": dict(folder="MNLI", hub=("premise", "hypothesis"),
                 tsv=("sentence1", "sentence2", "gold_label"), labels=_NLI3, metrics=("accuracy",),
                 dev={"mnli-m": ("validation_matched", "dev_matched.tsv"),
                      "mnli-mm": ("validation_mismatched", "dev_mismatched.tsv")}),
    "qnli": dict(folder="QNLI", hub=("question", "sentence"), tsv=("question", "sentence", "label"),
                 labels=_NLI2, metrics=("accuracy",)),
    "rte": dict(folder="RTE", hub=("sentence1", "sentence2"),
                tsv=("sentence1", "sentence2", "label"), labels=_NLI2, metrics=("accuracy",)),
    "wnli": dict(folder="WNLI", hub=("sentence1", "sentence2"),
                 tsv=("sentence1", "sentence2", "label"), labels=2, metrics=("accuracy",)),
}
_SUITE = ("rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli")  # small first: early news
_HUB = "nyu-mll/glue"
# the nine numbers the GLUE average is the plain mean of (MNLI counts twice), in the paper's order
_AVERAGED = ("mnli-m", "mnli-mm", "sst2", "stsb", "rte", "qnli", "qqp", "mrpc", "cola")

# GLUE-dev, medians of 5 fine-tuning seeds, x100. v1: the HF model card
# JonasGeiping/crammed-bert-legacy (= the paper's v1 Table 3); BERT rows: v1 Table 3 as quoted in
# public write-ups; v2: the card JonasGeiping/crammed-bert, which used the best of its 5 pretraining
# runs where the paper took the median. Each row's mean reproduces its stated average.
PAPER = {
    "crammed BERT, 1 day A6000 (v1)": (83.9, 84.1, 92.2, 84.6, 53.8, 89.5, 87.3, 87.5, 44.5, 78.6),
    "crammed BERT, 1 day A6000 (v2)": (84.1, 84.6, 92.0, 87.4, 58.5, 90.2, 87.5, 88.9, 53.3, 80.7),
    "BERT-base, fully trained": (83.2, 83.4, 91.9, 86.7, 59.2, 90.6, 87.7, 89.3, 56.5, 80.9),
    "BERT-base, no pretraining": (34.1, 34.1, 79.9, 17.8, 47.3, 50.0, 68.6, 77.9, 0.0, 45.5),
}
PAPER = {label: {**dict(zip(_AVERAGED, row[:9])), "avg": row[9]} for label, row in PAPER.items()}
_RECIPE = ("epochs", "batch_size", "learning_rate", "betas", "eps", "weight_decay",
           "warmup_fraction", "grad_clip", "dropout", "max_seq_len", "max_train_examples")

# texts a, texts b (None for one-sentence tasks), labels
Examples = namedtuple("Examples", "a b labels")


def resolve_tasks(name):
    if name == "all":
        return list(_SUITE)
    names = [n.strip().lower().replace("-", "") for n in name.split(",") if n.strip()]  # SST-2 too
    for n in names:
        if n not in TASKS:
            raise CramError(f"--task={name}: unknown task '{n}'; choose from {', '.join(TASKS)}, "
                            f"or all")
    if not names:
        raise CramError(f"--task={name!r}: name a task ({', '.join(TASKS)}) or all")
    return names


def dev_sets(name):
    """{table row: (hub split, tsv file)}: one dev set per task, MNLI's matched and mismatched."""
    return TASKS[name].get("dev", {name: ("validation", "dev.tsv")})


def label_dtype(name):
    return np.float32 if TASKS[name]["labels"] == 1 else np.int64


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
    """(line number, fields) per non-empty line. Split on tabs only: the files hold unbalanced
    quotes that csv quoting would follow across lines. utf-8-sig drops MRPC's byte-order mark, which
    would stick to its header."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        # not splitlines(): that also breaks on \x0b, \x1c, \u2028 inside sentences
        lines = f.read().split("\n")
    return [(i, line.rstrip("\r").split("\t")) for i, line in enumerate(lines, 1) if line.strip()]


def load_tsv(name, path):
    rows = read_tsv(path)
    folder = TASKS[name]["folder"]
    cols = TASKS[name]["tsv"]
    if isinstance(cols[0], str):  # by header name: MNLI's files have a dozen, in varying order
        header = rows.pop(0)[1] if rows else []
        missing = [c for c in cols if c is not None and c not in header]
        if missing:
            raise CramError(f"{path}: no column {', '.join(map(repr, missing))} in the header row; "
                            f"expected the GLUE distribution's {folder} file")
        cols = [None if c is None else header.index(c) for c in cols]
    col_a, col_b, col_label = cols
    width = max(c for c in cols if c is not None) + 1
    a, b, labels, short = [], [], [], 0
    for lineno, fields in rows:
        if len(fields) < width:  # QQP's train.tsv has a few broken rows: skip them, not a bad file
            short += 1
            continue
        if name == "mnli" and fields[col_label] == "-":  # no annotators' majority: as on the hub
            continue
        try:
            labels.append(parse_label(name, fields[col_label]))
        except ValueError:
            raise CramError(f"{path} line {lineno}: label {fields[col_label]!r} is not a valid "
                            f"{name} label ({TASKS[name]['labels']}); is this the GLUE "
                            f"distribution's file?") from None
        a.append(fields[col_a].strip())
        b.append(fields[col_b].strip() if col_b is not None else None)
    if short:
        print(f"{path}: skipped {short} rows with fewer than {width} tab-separated fields")
        if short > max(10, len(rows) // 100):
            raise CramError(f"{path}: {short} of {len(rows)} rows have fewer than {width} "
                            f"tab-separated fields; expected the GLUE distribution's {folder} file")
    return Examples(a, b if col_b is not None else None, np.array(labels, dtype=label_dtype(name)))


def task_files(name, root):
    folder = os.path.join(root, TASKS[name]["folder"])
    files = {"train": os.path.join(folder, "train.tsv")}
    for row, (_, filename) in dev_sets(name).items():
        files[row] = os.path.join(folder, filename)
    return files


def check_files(name, root):
    missing = [p for p in task_files(name, root).values() if not os.path.isfile(p)]
    if missing:
        raise CramError(f"{name}: {', '.join(missing)} not found: put the GLUE distribution's "
                        f"{TASKS[name]['folder']}/ folder under --glue_dir={root}, or leave out "
                        f"--glue_dir to load the HF hub dataset {_HUB} (config '{name}')")


def load_hub(name):
    try:
        from datasets import load_dataset
        ds = load_dataset(_HUB, name)
    except Exception as e:  # offline, a missing package, a hub outage: all end the same way
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise CramError(f"{name}: could not load the HF hub dataset {_HUB} (config '{name}'): "
                        f"{type(e).__name__}: {first_line}; without network pass --glue_dir=PATH "
                        f"holding the GLUE distribution's files, e.g. "
                        f"PATH/{TASKS[name]['folder']}/train.tsv and dev.tsv") from None
    field_a, field_b = TASKS[name]["hub"]

    def split(split_name):
        rows = ds[split_name]
        b = [t.strip() for t in rows[field_b]] if field_b else None
        labels = np.array(rows["label"], dtype=label_dtype(name))
        return Examples([t.strip() for t in rows[field_a]], b, labels)
    data = {"train": split("train")}
    for row, (split_name, _) in dev_sets(name).items():
        data[row] = split(split_name)
    return data


def load_task(name, root=None):
    """{"train": Examples, dev row: Examples, ...} from --glue_dir if given, else from the hub."""
    if root is None:
        return load_hub(name)
    check_files(name, root)
    return {key: load_tsv(name, path) for key, path in task_files(name, root).items()}


def subsample(ex, k, subset_seed):
    if not k or k >= len(ex.a):
        return ex
    idx = sorted(random.Random(subset_seed).sample(range(len(ex.a)), k))  # the same for every seed
    b = [ex.b[i] for i in idx] if ex.b is not None else None
    return Examples([ex.a[i] for i in idx], b, ex.labels[idx])


# -----------------------------------------------------------------------------
# tokens and batches

def truncate_pair(a, b, budget):
    """Longest-first, like BERT: drop tokens from the end of the longer text (b on ties) until both
    fit."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return a, b


def encode(tok, ex, max_seq_len):
    """[CLS] a [SEP] or [CLS] a [SEP] b [SEP], at most max_seq_len tokens. Done once per task and
    shared by all seeds; int32 arrays, since lists of Python ints for MNLI's 393k pairs would take
    the better part of a GB."""
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
    """Pad to the batch's longest, not to max_seq_len: most GLUE examples are far shorter, and
    padding costs compute."""
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
    for metric in names:
        # a constant prediction has no correlation: score it 0, as sklearn's MCC does, not NaN
        flat = len(preds) < 2 or np.ptp(preds) == 0 or np.ptp(labels) == 0
        if metric == "pearson":
            value = 0.0 if flat else pearsonr(preds, labels)[0]
        elif metric == "spearman":
            value = 0.0 if flat else spearmanr(preds, labels)[0]
        elif metric == "mcc":
            value = matthews_corrcoef(labels, preds)
        elif metric == "f1":
            value = f1_score(labels, preds, zero_division=0.0)  # F1 of class 1, as GLUE scores it
        else:
            value = accuracy_score(labels, preds)
        out[metric] = 100.0 * float(value)
    return out


def glue_average(scores):
    """The mean of the nine numbers (MNLI matched and mismatched separately); None until all nine
    are in."""
    if not all(r in scores for r in _AVERAGED):
        return None
    return sum(scores[r] for r in _AVERAGED) / len(_AVERAGED)


# -----------------------------------------------------------------------------
# fine-tuning

@torch.no_grad()
def predict(model, seqs, pad_id, regression, device, ctx):
    """Predictions in the original order; batches are sorted by length, so that little compute goes
    to padding."""
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = np.zeros(len(seqs), dtype=np.float64 if regression else np.int64)
    for i in range(0, len(order), eval_batch_size):
        ids = order[i:i + eval_batch_size]
        idx, mask = collate([seqs[j] for j in ids], pad_id)
        with ctx:
            logits, _ = model(to_device(idx, device), attention_mask=to_device(mask, device))
        logits = logits.float()
        out[ids] = (logits[:, 0] if regression else logits.argmax(-1)).cpu().numpy()
    return out


def learning_rate_at(step, total):
    """Linear warmup over warmup_fraction of the steps, then cosine decay to 0 (+1: no step at
    lr 0)."""
    return learning_rate * warmup_cosine((step + 1) / (total + 1), warmup_fraction)


def finetune(model, name, train, devs, pad_id, run_seed, device, amp_dtype=torch.float32,
             log=print):
    """Fine-tune on train = (seqs, labels) with the settings' recipe and score every dev row =
    {row: (seqs, labels)} after each epoch, under autocast to amp_dtype. Returns the per-epoch
    scores and mean training losses; the last epoch's are the result."""
    device_type = torch.device(device).type  # cuda:1 -> cuda
    ctx = amp_context(device_type, amp_dtype)
    optimizer = configure_optimizer(model, weight_decay, learning_rate, tuple(betas), eps,
                                    device_type)
    scaler = grad_scaler(device_type, amp_dtype)
    regression = TASKS[name]["labels"] == 1
    seqs, labels = train
    labels = torch.as_tensor(labels, dtype=torch.float32 if regression else torch.long)
    n = len(seqs)
    per_epoch = math.ceil(n / batch_size)
    total = epochs * per_epoch
    generator = torch.Generator().manual_seed(run_seed)
    history, step = [], 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)
        loss_sum = torch.zeros((), device=device)
        skipped_sum = torch.zeros((), device=device)
        t0 = time.time()
        shown = 0.0
        for k, i in enumerate(range(0, n, batch_size), 1):
            ids = order[i:i + batch_size]
            idx, mask = collate([seqs[j] for j in ids.tolist()], pad_id)
            batch = (to_device(idx, device), to_device(labels[ids], device),
                     to_device(mask, device))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, total)
            # pretraining's step: a non-finite gradient skips the update, not ruining the weights
            loss, skipped = train_step(model, optimizer, scaler, lambda: batch, 1, ctx, grad_clip)
            loss_sum += loss.float()
            skipped_sum += skipped
            step += 1
            if time.time() - shown > 0.5 or k == per_epoch:  # reading the loss syncs the GPU
                shown = time.time()
                msg = (f"{name} seed {run_seed} epoch {epoch}/{epochs} step {k}/{per_epoch} "
                       f"loss {loss_sum.item() / k:.4f} {shown - t0:.0f}s")
                sys.stderr.write(f"\r{msg:<79}")
                sys.stderr.flush()
        sys.stderr.write("\r" + " " * max(79, len(msg)) + "\r")
        scores = {}
        for row, (dev_seqs, dev_labels) in devs.items():
            preds = predict(model, dev_seqs, pad_id, regression, device, ctx)
            scores[row] = compute_metrics(TASKS[name]["metrics"], preds, dev_labels)
        train_loss = loss_sum.item() / per_epoch
        n_skipped = int(skipped_sum.item())
        history.append({"epoch": epoch, "train_loss": train_loss, "scores": scores,
                        "skipped_steps": n_skipped})
        shown_scores = "; ".join(f"{row} " + " ".join(f"{m} {v:.2f}" for m, v in row_scores.items())
                                 for row, row_scores in scores.items())
        shown_skips = f" | {n_skipped} non-finite steps skipped" if n_skipped else ""
        log(f"{name} seed {run_seed} epoch {epoch}/{epochs}: {shown_scores} | "
            f"train loss {train_loss:.4f}{shown_skips} | {time.time() - t0:.1f}s")
    return history


# -----------------------------------------------------------------------------
# the checkpoint, the model, the run

def weights_checksum(state):
    """Tells a checkpoint retrained at the same path and step from the one earlier results came
    from: a hash of the bytes (a float sum differs in its last digit with the number of threads)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def load_source(ckpt_path):
    """(pretrained state dict or None, model_args, tokenizer, info for the results) from a
    checkpoint path, or "none" for the baseline: the same recipe without pretraining, in the shape
    the settings give."""
    if ckpt_path == "none":
        tok = Tokenizer(tokenizer)
        args = {k: globals()[k] for k in model_settings() if k not in _NOT_SETTINGS}
        args.update(vocab_size=tok.vocab_size, block_size=max_seq_len)
        bert_config(**args, dropout=dropout)  # a bad shape is refused now, not after tokenizing
        info = {"ckpt": "none", "ckpt_step": 0, "tokens_seen": 0, "model_args": args,
                "weights_checksum": None}
        return None, args, tok, info
    checkpoint = load_checkpoint(ckpt_path)
    tok = Tokenizer.from_meta(checkpoint["meta"], source=ckpt_path)
    args = dict(checkpoint["model_args"])
    if args.get("vocab_size") != tok.vocab_size:
        raise CramError(f"{ckpt_path}: the model's vocab_size {args.get('vocab_size')} does not "
                        f"match its tokenizer '{tok.name}' ({tok.vocab_size}); this checkpoint was "
                        f"not written by this version of cram's train.py")
    block = args.get("block_size", 128)
    if max_seq_len > block:
        raise CramError(f"--max_seq_len={max_seq_len} exceeds the checkpoint's block_size {block}: "
                        f"pass --max_seq_len={block} or less")
    # shapes only (the meta device allocates nothing): a checkpoint from another model.py is refused
    # now, not after the first task's tokenizing
    with torch.device("meta"):
        encoder = Bert(bert_config(**args))
    check_weights(encoder, checkpoint["model"], ckpt_path)
    defaults = model_settings()
    ignored = [f"{k}={globals()[k]!r} (the checkpoint: {args[k]!r})" for k in defaults
               if k in args and k not in _NOT_SETTINGS and args[k] != globals()[k] != defaults[k]]
    if ignored:  # config/glue_cpu.py's shape is the baseline's; a checkpoint brings its own
        print(f"the architecture is {ckpt_path}'s; ignoring {', '.join(ignored)}")
    info = {"ckpt": ckpt_path, "ckpt_step": checkpoint.get("step"),
            "tokens_seen": checkpoint.get("tokens_seen"), "model_args": args,
            "weights_checksum": weights_checksum(checkpoint["model"])}
    return checkpoint["model"], args, tok, info


def build_model(state, args, name, device):
    labels = TASKS[name]["labels"]
    num_labels = labels if isinstance(labels, int) else len(labels)
    model = BertForSequenceClassification(bert_config(**{**args, "dropout": dropout}), num_labels)
    if state is not None:
        load_weights(model.bert, state, ckpt)
    return model.to(device)


def run_task(name, data, tok, state, args, device, amp_dtype=torch.float32):
    """Fine-tune one task with each seed; the result keeps every epoch of every seed and the seeds'
    median."""
    t0 = time.time()
    train = subsample(data["train"], max_train_examples, seed)
    empty = [split for split, ex in data.items() if not ex.a]
    if empty:
        where = os.path.join(glue_dir, TASKS[name]["folder"]) if glue_dir else f"the hub ({_HUB})"
        raise CramError(f"{name}: no examples in {', '.join(empty)} (from {where}); check the "
                        f"task's files")
    sizes = ", ".join(f"{row} {len(ex.a)}" for row, ex in data.items() if row != "train")
    subset = ""
    if len(train.a) < len(data["train"].a):
        subset = f" (of {len(data['train'].a)}, --max_train_examples)"
    print(f"{name}: {len(train.a)} training examples{subset}; dev: {sizes}")
    train_set = (encode(tok, train, max_seq_len), train.labels)
    devs = {row: (encode(tok, ex, max_seq_len), ex.labels) for row, ex in data.items()
            if row != "train"}
    runs = []
    for run_seed in range(seed, seed + seeds):
        t1 = time.time()
        random.seed(run_seed)
        np.random.seed(run_seed)
        torch.manual_seed(run_seed)  # the classifier head's init and the dropout masks
        model = build_model(state, args, name, device)
        history = finetune(model, name, train_set, devs, tok.pad_id, run_seed, device, amp_dtype)
        runs.append({"seed": run_seed, "epochs": history, "final": history[-1]["scores"],
                     "seconds": time.time() - t1})
        del model
    # the score is the last epoch's (no picking the best epoch on dev), the median over seeds
    median = {}
    for row in devs:
        median[row] = {m: float(np.median([r["final"][row][m] for r in runs]))
                       for m in TASKS[name]["metrics"]}
    return {"seeds": [r["seed"] for r in runs], "median": median, "seconds": time.time() - t0,
            "n_train": len(train.a), "n_dev": {row: len(d[0]) for row, d in devs.items()},
            "settings": {k: globals()[k] for k in _RECIPE}, "runs": runs}


def main_scores(tasks):
    """{table row: main metric} over the tasks' results; a task's first metric is its main one."""
    scores = {}
    for name, res in tasks.items():
        for row, med in res["median"].items():
            scores[row] = med[TASKS[name]["metrics"][0]]
    return scores


def write_json(path, obj):
    tmp = path + ".tmp"  # a crash mid-write leaves the previous file whole
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def earlier_tasks(path, info):
    """Results already in glue_results.json for the same checkpoint (path, step, shape, weights)
    and the same recipe: kept and merged. Another checkpoint's or recipe's are refused unless
    --overwrite: one table must not mix them, and one run must not erase hours of another's."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return {}
    same_path = os.path.abspath(str(old.get("ckpt"))) == os.path.abspath(str(info["ckpt"]))
    same = same_path and all(old.get(k) == info[k]
                             for k in ("ckpt_step", "model_args", "weights_checksum"))
    if same:
        tasks = old.get("tasks", {})
        # through JSON, as the file holds it (a tuple becomes a list)
        recipe = json.loads(json.dumps({k: globals()[k] for k in _RECIPE}))
        differ = sorted({k for res in tasks.values() for k, v in res.get("settings", {}).items()
                         if recipe.get(k) != v})
        if not differ:
            return tasks
        what = f"another recipe ({', '.join(differ)})"
    elif same_path and info["ckpt"] == "none":
        what = "a random init of another shape (--ckpt=none)"
    else:
        what = f"another checkpoint ({old.get('ckpt')}, step {old.get('ckpt_step')})"
    if not overwrite:
        raise CramError(f"{path} holds results of {what}: pass another --out_dir, or "
                        f"--overwrite=True to replace them")
    print(f"{path} holds results of {what}: replacing it (--overwrite=True)")
    return {}


def format_tables(results, ran):
    """The per-run table (task, metric, score, seconds) and the GLUE table beside the paper's."""
    lines = [f"{'task':<9}{'metric':<10}{'score':>8}{'seconds':>10}   also"]
    for name in ran:
        res = results["tasks"][name]
        main, *rest = TASKS[name]["metrics"]
        for row, med in res["median"].items():
            also = " ".join(f"{m} {med[m]:.2f}" for m in rest)
            line = f"{row:<9}{main:<10}{med[main]:>8.2f}{res['seconds']:>10.1f}   {also}"
            lines.append(line.rstrip())
    n_seeds = max(len(res["seeds"]) for res in results["tasks"].values())
    seeds_said = f"median of {n_seeds} seeds" if n_seeds > 1 else "one seed"
    lines += ["", f"GLUE dev ({seeds_said}; MNLI m/mm, MRPC/QQP F1, STS-B Pearson, CoLA MCC; x100)"]
    head = f"{'':<34}" + "".join(f"{r:>8}" for r in _AVERAGED) + f"{'avg':>8}"
    scores, avg = main_scores(results["tasks"]), results["glue_average"]
    ours = f"{'this run: ' + os.path.basename(str(results['ckpt'])):<34.34}"
    ours += "".join(f"{scores[r]:>8.1f}" if r in scores else f"{'-':>8}" for r in _AVERAGED)
    ours += f"{avg:>8.1f}" if avg is not None else f"{'-':>8}"
    paper = [f"{label:<34}" + "".join(f"{row[r]:>8.1f}" for r in _AVERAGED) + f"{row['avg']:>8.1f}"
             for label, row in PAPER.items()]
    return "\n".join(lines + [head, ours] + paper)


def main():
    """Fine-tune the tasks --task names with the settings, write the JSON, return the results."""
    names = resolve_tasks(task)
    require_at_least(1, seeds=seeds, epochs=epochs, batch_size=batch_size,
                     eval_batch_size=eval_batch_size)
    require_at_least(8, max_seq_len=max_seq_len)
    configurator.require_folder("out_dir", out_dir)
    if glue_dir is not None:  # find every missing file now, not hours in after the first tasks ran
        for name in names:
            check_files(name, glue_dir)
    if num_threads:
        torch.set_num_threads(num_threads)
    device_name, device_type = pick_device(device)
    amp_dtype = autocast_dtype(device_type, dtype)  # bf16 or fp16 (with loss scaling) on GPUs
    state, args, tok, info = load_source(ckpt)
    source = glue_dir or f"the HF hub ({_HUB})"
    print(f"fine-tuning {ckpt} (step {info['ckpt_step']}, {args}) on {', '.join(names)} with "
          f"{device_name} ({dtype_name(amp_dtype)}); data from {source}")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "glue_results.json")
    tasks = earlier_tasks(path, info)
    if tasks:
        kept = ", ".join(t for t in tasks if t not in names) or "none kept"
        print(f"merging with earlier results in {path} for this checkpoint: {kept}")
    settings = {k: globals()[k] for k in configurator.settings_of(globals())}
    results = {}
    for name in names:
        tasks[name] = run_task(name, load_task(name, glue_dir), tok, state, args, device_name,
                               amp_dtype)
        results = {**info, "device": device_name, "settings": settings, "tasks": tasks,
                   "scores": main_scores(tasks), "glue_average": glue_average(main_scores(tasks))}
        write_json(path, results)  # after every task: a late crash keeps what finished
    print("\n" + format_tables(results, names))
    print(f"\nwrote {path}")
    return results


def run(**overrides):
    """main() with some settings changed, as --key=value would change them: for tests, notebooks."""
    with configurator.overridden(globals(), **overrides):
        return main()


if __name__ == "__main__":
    configurator.configure(globals())
    main()
