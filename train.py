"""
Pretrain the crammed BERT against the clock.

    python train.py --budget_hours=24                      # one GPU, the paper's recipe
    python train.py config/cram_cpu.py                     # a laptop CPU
    torchrun --standalone --nproc_per_node=4 train.py      # DDP on one node

Progress p = elapsed / budget drives the learning rate, the batch size ramp, evaluation and the
stop. The clock starts once data and model are set up; compilation counts, evaluation and checkpoint
writes do not. max_steps > 0 replaces the clock by p = step / max_steps, for reproducible runs.
"""
import inspect
import json
import os
import signal
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import configurator
from configurator import CramError, require_at_least
from model import Bert, configure_optimizer, mask_tokens, masked_count
from prepare import Tokenizer, open_blocks, read_meta, read_token_counts
from runtime import (amp_context, autocast_dtype, bert_config, dtype_name, grad_scaler,
                     load_checkpoint, load_weights, model_settings, peak_flops, pick_device,
                     save_checkpoint, synchronize, to_device, train_step, wants_compile,
                     warmup_cosine)

# -----------------------------------------------------------------------------
# settings: the paper's final recipe; override with config/*.py files and --key=value
# I/O
data_dir = "data/wikipedia"  # a folder made by prepare.py
out_dir = "out"
init_from = "scratch"  # or 'resume' (out_dir/ckpt.pt: the clock, schedule and data order go on)
overwrite = False  # a scratch run refuses to replace an existing out_dir/ckpt.pt unless True
log_interval = 10  # steps between logs: the only point where the steady loop waits for the device
eval_fractions = (0.25, 0.5, 0.75)  # of the budget; there is always a final evaluation too
eval_blocks = 1024  # fixed validation blocks with fixed masks: comparable across runs and resumes
checkpoint_minutes = 30.0
wandb_log = False
wandb_project = "cram"
wandb_run_name = "cram"
# model: every BertConfig field (model.py: the shape and the architecture switches, with the
# crammed recipe's values) is a setting of the same name, e.g. --n_layer=4 --norm_scheme=post
globals().update(model_settings())
block_size = 0  # 0: the data's (meta.json); anything else must agree with it
vocab_size = 0  # 0: the data's (meta.json); anything else must agree with it
eval_mask_fraction = 0.25  # validation masks, whatever mask_fraction: losses compare across runs
# batch: a linear ramp from one micro step to batch_size over the first batch_ramp of the budget
batch_size = 8192  # sequences per optimizer step at the end of the ramp
batch_ramp = 0.6
micro_batch_size = 128  # sequences per forward pass; sized for a 24 GB GPU at the default model
# optimizer and schedule
learning_rate = 1e-3  # peak
schedule = "triangle"  # triangle | trapezoid | cosine | linear (BERT's warmup, then decay to 0)
warmup_fraction = 0.1  # trapezoid, cosine and linear
cooldown_fraction = 0.2  # trapezoid
weight_decay = 0.01
betas = (0.9, 0.98)
eps = 1e-12
grad_clip = 0.5
max_nonfinite_in_a_row = 5  # steps with a non-finite loss are skipped; this many in a row stop
# budget
budget_hours = 24.0
max_steps = 0  # > 0: a step clock instead of the wall clock
stop_at_step = 0  # > 0: stop here with a checkpoint as if interrupted (staged runs, resume tests)
# system
device = "auto"  # auto: cuda, then mps, then cpu
dtype = "auto"  # auto: bf16 where the hardware does bf16 math, fp16 on older CUDA GPUs, else fp32
compile = None  # None: on for CUDA, off elsewhere
peak_flops_per_sec = 0.0  # for MFU; 0 = the GPU table, else a measured matmul
seed = 1337
backend = "nccl"  # DDP on CUDA; CPU runs use gloo
config = configurator.configure(globals())
# -----------------------------------------------------------------------------
require_at_least(1, micro_batch_size=micro_batch_size, batch_size=batch_size,
                 log_interval=log_interval)
require_at_least(0, max_steps=max_steps, stop_at_step=stop_at_step, learning_rate=learning_rate)
configurator.require_folder("out_dir", out_dir)
if budget_hours <= 0 and max_steps <= 0:
    raise CramError(f"--budget_hours={budget_hours}: give a positive budget (or a step clock with "
                    f"--max_steps)")
if schedule not in ("triangle", "trapezoid", "cosine", "linear"):
    raise CramError(f"--schedule={schedule}: unknown; use triangle, trapezoid, cosine or linear")
# trapezoid and linear divide by the warmup; cosine may start at its peak
if schedule in ("trapezoid", "linear") and not 0 < warmup_fraction < 1:
    raise CramError(f"--warmup_fraction={warmup_fraction} with --schedule={schedule}: the warmup "
                    f"must take part of the budget, in (0, 1); BERT's is 0.01")
if schedule == "cosine" and not 0 <= warmup_fraction < 1:
    raise CramError(f"--warmup_fraction={warmup_fraction}: choose one in [0, 1)")
if schedule == "trapezoid" and not 0 < cooldown_fraction <= 1 - warmup_fraction:
    raise CramError(f"--cooldown_fraction={cooldown_fraction} with --schedule=trapezoid: the decay "
                    f"must take part of the budget after the warmup ({warmup_fraction}), in (0, "
                    f"{1 - warmup_fraction:g}]")
if init_from not in ("scratch", "resume"):
    raise CramError(f"--init_from={init_from}: use 'scratch' or 'resume'")


def learning_rate_at(p):
    """The learning rate at progress p in [0, 1], the fraction of the budget spent."""
    if schedule == "triangle":
        # the paper's one-cycle: a quarter of the peak, up to the peak at p=0.75, down to 0
        return learning_rate * max(0.0, min(0.25 + p, 4 * (1 - p)))
    if schedule == "trapezoid":  # linear warmup, flat, linear decay to 0
        return learning_rate * max(0.0, min(1.0, p / warmup_fraction, (1 - p) / cooldown_fraction))
    if schedule == "linear":  # BERT's (over its step count), here over the budget
        return learning_rate * max(0.0, min(p / warmup_fraction, (1 - p) / (1 - warmup_fraction)))
    return learning_rate * warmup_cosine(p, warmup_fraction)  # linear warmup, cosine decay to 0


def batch_size_at(p, micro_step_sequences):
    """Sequences per optimizer step at progress p: a linear ramp from one micro step (micro batch x
    ranks) to batch_size over the first batch_ramp of the budget, in whole micro steps."""
    target = batch_size
    if batch_ramp > 0:
        ramp = min(1.0, p / batch_ramp)
        target = micro_step_sequences + (batch_size - micro_step_sequences) * ramp
    return max(micro_step_sequences, round(target / micro_step_sequences) * micro_step_sequences)


ddp = int(os.environ.get("RANK", -1)) != -1
if ddp:
    device, device_type = pick_device(device)
    dist.init_process_group(backend=backend if device_type == "cuda" else "gloo")
    rank = dist.get_rank()
    world_size = dist.get_world_size()
    if device_type == "cuda":
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    else:
        device = device_type
else:
    rank, world_size = 0, 1
    device, device_type = pick_device(device)
master = rank == 0
ckpt_path = os.path.join(out_dir, "ckpt.pt")
ckpt = None
trained_in = None  # the checkpoint whose precision the run keeps
if init_from == "resume":
    ckpt = load_checkpoint(ckpt_path, "cpu")  # load_state_dict moves tensors where they belong
    trained_dtype = ckpt.get("dtype", "auto")
    if dtype == "auto":
        dtype, trained_in = trained_dtype, ckpt_path  # a resumed run keeps its precision
    elif dtype != trained_dtype and master:
        print(f"resume: --dtype={dtype} replaces the precision {ckpt_path} was trained in "
              f"({trained_dtype})")
ptdtype = autocast_dtype(device_type, dtype, trained_in)
amp_ctx = amp_context(device_type, ptdtype)
scaler = grad_scaler(device_type, ptdtype)
use_compile = wants_compile(compile, device_type)
if device_type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (e.g. the loss) on tensor cores
    torch.backends.cudnn.allow_tf32 = True
torch.manual_seed(seed)  # the initial weights; dropout is seeded per micro step (next_batch)

# data: memmapped uint16 blocks from prepare.py
meta_path = os.path.join(data_dir, "meta.json")
meta = read_meta(data_dir)
tok = Tokenizer.from_meta(meta, meta_path)
if block_size and block_size != meta["block_size"]:
    raise CramError(f"--block_size={block_size} contradicts {meta_path} (block_size "
                    f"{meta['block_size']}): drop the setting or re-run prepare.py with "
                    f"--block_size={block_size}")
if vocab_size and vocab_size != meta["vocab_size"]:
    raise CramError(f"--vocab_size={vocab_size} contradicts {meta_path} "
                    f"(vocab_size {meta['vocab_size']}): drop the setting")
block_size = meta["block_size"]
n_val_masked = masked_count(eval_mask_fraction, block_size)
if not 0 < n_val_masked <= block_size:
    raise CramError(f"--eval_mask_fraction={eval_mask_fraction} masks {n_val_masked} of "
                    f"{block_size} positions per block: choose one in (0, 1]")
train_data = open_blocks(data_dir, "train", block_size)
val_data = open_blocks(data_dir, "val", block_size)
n_train = len(train_data)
if n_train == 0:
    raise CramError(f"{data_dir}/train.bin holds no blocks: prepare more text "
                    f"(or a smaller --block_size in prepare.py)")
micro_step_sequences = micro_batch_size * world_size
if batch_size % micro_step_sequences:
    raise CramError(f"--batch_size={batch_size} must be a multiple of micro_batch_size x ranks "
                    f"= {micro_step_sequences}")

# model, optimizer, and on resume everything that makes the continuation exact
vocab_size = meta["vocab_size"]
model_args = {key: globals()[key] for key in model_settings()}
step, tokens_seen, elapsed_s, micro_steps, evals_done = 0, 0, 0.0, 0, 0
nonfinite_steps = {"total": 0, "in_a_row": 0, "most_in_a_row": 0}
data_state = {"epoch": 0, "cursor": 0}
if ckpt is not None:
    # the data position (epoch, cursor) only means something in the same corpus
    corpus_keys = ("source", "tokenizer", "vocab_size", "block_size", "order", "seed",
                   "train_blocks", "val_blocks")
    for key in corpus_keys:
        if ckpt["meta"].get(key) != meta.get(key):
            raise CramError(f"{ckpt_path} was trained on other data ({key} "
                            f"{ckpt['meta'].get(key)!r}, here {meta.get(key)!r} in {data_dir}): "
                            f"point --data_dir at the data it was trained on")
    # a resumed run keeps its model and its seed (the data order and masks follow it): a setting
    # that differs would be silently ignored or would re-read and skip blocks, so refuse it
    # a checkpoint from before a switch existed was trained with its default
    given = {**model_args, "seed": seed}
    trained = {**model_settings(), **ckpt["model_args"], "seed": ckpt["config"]["seed"]}
    for key, value in trained.items():
        if given.get(key) != value:
            raise CramError(f"--{key}={given.get(key)} but {ckpt_path} has {key}={value}: a "
                            f"resumed run keeps its model and seed; pass the settings (or config "
                            f"file) it was started with")
    ignored = ("init_from", "overwrite", "dtype")
    changed = [f"{k} {v!r} -> {config[k]!r}" for k, v in ckpt["config"].items()
               if k in config and config[k] != v and k not in ignored]
    if master and changed:  # allowed (a longer budget, say), but never unnoticed
        print(f"resume: settings that differ from the checkpoint's run: {', '.join(changed)}")
    step = ckpt["step"]
    tokens_seen = ckpt["tokens_seen"]
    elapsed_s = ckpt["elapsed_s"]
    micro_steps = ckpt["micro_steps"]
    evals_done = ckpt["evals_done"]
    nonfinite_steps = ckpt.get("nonfinite_steps", nonfinite_steps)
    data_state = dict(ckpt["data_state"])
elif master and os.path.exists(ckpt_path) and not overwrite:
    raise CramError(f"{ckpt_path} exists: continue it with --init_from=resume, "
                    f"or pass --overwrite=True or another --out_dir")
model = Bert(bert_config(**model_args)).to(device)
# ids that never occur in train.bin are neither predicted nor drawn as random replacements
seen = torch.from_numpy(read_token_counts(data_dir, meta["vocab_size"]) > 0).to(device)
model.decodable.copy_(seen)
random_pool = torch.nonzero(seen[:tok.n_bpe]).squeeze(1)
optimizer = configure_optimizer(model, weight_decay, learning_rate, betas, eps, device_type)
if ckpt is not None:
    load_weights(model, ckpt["model"], ckpt_path)
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt["scaler"] and scaler.is_enabled():  # empty when the run it came from used bf16 or fp32
        scaler.load_state_dict(ckpt["scaler"])
    ckpt = None  # free the host copy of the weights
raw_model = model
if ddp:
    # the only buffers are the constant position tables and the decodable ids: no need to send them
    # every forward (forward_sync_buffers in newer torch, broadcast_buffers in older)
    if "forward_sync_buffers" in inspect.signature(DDP).parameters:
        no_buffer_sync = {"forward_sync_buffers": False}
    else:
        no_buffer_sync = {"broadcast_buffers": False}
    device_ids = [int(os.environ["LOCAL_RANK"])] if device_type == "cuda" else None
    model = DDP(model, device_ids=device_ids, **no_buffer_sync)
    # the clock and the stop flag on CPU tensors: agreeing on them never waits for the GPU
    clock_group = dist.new_group(backend="gloo")
# rank 0 evaluates alone, so never through DDP (its forward talks to the other ranks)
eval_model = raw_model
if use_compile:
    # static shapes throughout: one graph for training, one for eval; dynamic=False keeps the eval
    # shape from turning the batch dimension symbolic (slower kernels). DDP is compiled, not wrapped
    # around a compiled model: dynamo then splits the graph at DDP's gradient buckets, so that their
    # all-reduce overlaps the backward
    model = torch.compile(model, dynamic=False)
    eval_model = torch.compile(raw_model, dynamic=False) if ddp else model


# the data stream: every block once per epoch in a seeded order (file order for sorted data), across
# epoch ends without re-reading or skipping; ranks take disjoint slices of each global micro batch
def epoch_order(epoch):
    if meta.get("order") == "sorted":
        return np.arange(n_train)
    return np.random.default_rng([seed, epoch]).permutation(n_train)


order = epoch_order(data_state["epoch"])
mask_gen = torch.Generator(device=device)
data_wait_s = 0.0


def next_batch():
    global order, micro_steps, data_wait_s
    t0 = time.perf_counter()
    need = micro_step_sequences
    parts = []
    while need:
        take = min(need, n_train - data_state["cursor"])
        parts.append(order[data_state["cursor"]: data_state["cursor"] + take])
        data_state["cursor"] += take
        need -= take
        if data_state["cursor"] == n_train:
            data_state["epoch"] += 1
            data_state["cursor"] = 0
            order = epoch_order(data_state["epoch"])
    rows = np.concatenate(parts)[rank * micro_batch_size: (rank + 1) * micro_batch_size]
    x = torch.from_numpy(train_data[rows].astype(np.int64))
    x = to_device(x, device)
    # data wait is the host's part; the masking below is device work, and a kernel launch there can
    # block on a full GPU queue, which is the GPU being busy, not waiting for data
    data_wait_s += time.perf_counter() - t0
    # masks and dropout from seeds of (micro step, rank): exact on resume on any device, with no
    # generator state to carry, and each rank draws its own dropout
    micro_seed = seed * 1_000_003 + micro_steps * world_size + rank
    mask_gen.manual_seed(micro_seed)
    torch.manual_seed(micro_seed + 2**40)  # seeds the CUDA generators too: host-side, no sync
    micro_steps += 1
    return mask_tokens(x, mask_fraction, tok.mask_id, tok.n_bpe, mask_gen, random_pool)


# validation: the same blocks and masks whatever the device, micro batch or masking rate (the masks
# are drawn on the CPU, at eval_mask_fraction), so losses compare across runs; 0 blocks: none
n_eval = min(eval_blocks, len(val_data))
# whole eval batches of a size that divides n_eval: one more compiled shape, no recompiles
eval_batch = max([d for d in range(1, min(micro_batch_size, n_eval) + 1) if n_eval % d == 0] or [1])
val_x = torch.from_numpy(val_data[:n_eval].astype(np.int64))
val_gen = torch.Generator().manual_seed(0)
val_x, val_y = mask_tokens(val_x, eval_mask_fraction, tok.mask_id, tok.n_bpe, val_gen,
                           random_pool.cpu())
val_x, val_y = val_x.to(device), val_y.to(device)
# a target train.bin never has cannot be predicted (its logit is -inf): it is not scored
val_y = val_y.masked_fill((val_y >= 0) & ~seen[val_y.clamp(min=0)], -100)


@torch.no_grad()
def evaluate():
    eval_model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for i in range(0, n_eval, eval_batch):
        x, y = val_x[i: i + eval_batch], val_y[i: i + eval_batch]
        with amp_ctx:
            logits, loss = eval_model(x, labels=y, n_masked=n_val_masked)
        if raw_model.config.sparse_prediction:  # the logits are those of the masked positions
            y = y.gather(1, raw_model.masked_positions(y, n_val_masked))
        scored = (y != -100).sum().item()
        loss_sum += loss.item() * scored  # a mean over all scored tokens, however they are batched
        correct += (logits.argmax(-1) == y).sum().item()
        count += scored
    eval_model.train()
    return loss_sum / max(count, 1), correct / max(count, 1)


def log(record):
    if not master:
        return
    fields = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()]
    print(" | ".join(fields), flush=True)
    with open(log_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    if wandb_log:
        wandb.log(record, step=record["step"])


def checkpoint():
    if not master:
        return
    save_checkpoint(ckpt_path, {
        "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(), "model_args": model_args, "meta": meta, "config": config,
        "dtype": dtype_name(ptdtype), "step": step, "tokens_seen": tokens_seen,
        "elapsed_s": elapsed_s, "micro_steps": micro_steps, "evals_done": evals_done,
        "nonfinite_steps": {"total": int(skipped_total), "in_a_row": int(skipped_run),
                            "most_in_a_row": int(skipped_worst)},
        "data_state": data_state,
    })


def pause_clock():
    """Start timing work the budget does not count; wait for queued GPU work first, so it is not
    counted too."""
    synchronize(device_type)
    return time.monotonic()


# SIGTERM (schedulers) or Ctrl-C: stop at the next micro batch (a half-done step is dropped and done
# again on resume), write a checkpoint, exit 0. torchrun's agent sends SIGKILL ~30 s after SIGTERM,
# and a whole step of 64 micro batches can take longer than that
stop_signal = None


def request_stop(signum, frame):
    global stop_signal
    stop_signal = signal.Signals(signum).name
    signal.signal(signum, signal.SIG_DFL)  # a second signal kills at once


def stop_requested():
    global stop_signal
    if ddp:  # all ranks stop at the same micro batch, or one would wait forever in an all-reduce
        flag = torch.tensor([float(stop_signal is not None)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=clock_group)
        stop_signal = stop_signal or ("signal" if flag.item() else None)
    return stop_signal is not None


signal.signal(signal.SIGTERM, request_stop)
signal.signal(signal.SIGINT, request_stop)

final_logged_step = -1  # a resumed run that had already finished: its final evaluation is logged
if master:
    os.makedirs(out_dir, exist_ok=True)
    log_path = os.path.join(out_dir, "log.jsonl")
    if os.path.exists(log_path):
        # scratch: a new log; resume: drop the lines of steps the checkpoint did not keep
        kept, evals_logged = [], 0
        with open(log_path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a kill -9
                    continue
                if init_from == "resume" and record["step"] <= step:
                    if "val_loss" in record and not record.get("final"):
                        evals_logged += 1
                        if evals_logged > evals_done:  # after the checkpoint: evaluated again
                            continue
                    kept.append(line if line.endswith("\n") else line + "\n")
                    if record.get("final"):
                        final_logged_step = record["step"]
        with open(log_path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(log_path + ".tmp", log_path)
    if wandb_log:
        import wandb
        wandb.init(project=wandb_project, name=wandb_run_name, config=config)
if peak_flops_per_sec:
    peak, peak_source = peak_flops_per_sec, "setting"
else:
    peak, peak_source = peak_flops(device_type, ptdtype)
budget_s = budget_hours * 3600
if master:
    print(f"model: {raw_model.num_params():,} parameters, {model_args}")
    print(f"data: {n_train:,} train blocks, {n_eval} eval blocks of {block_size} tokens; "
          f"{int(seen.sum()):,} of {len(seen):,} token ids occur in train.bin; the unigram entropy "
          f"a masked LM must beat: {meta.get('unigram_entropy', float('nan')):.3f} nats")
    print(f"device {device}, {dtype_name(ptdtype)}, compile {use_compile}, {world_size} rank(s); "
          f"peak {peak:.3g} FLOP/s ({peak_source})")


# the loop -------------------------------------------------------------------------------------
# non-finite counters live on the device: no sync per step
skipped_total = torch.tensor(float(nonfinite_steps["total"]), device=device)
skipped_run = torch.tensor(float(nonfinite_steps["in_a_row"]), device=device)
skipped_worst = torch.tensor(float(nonfinite_steps["most_in_a_row"]), device=device)
# the clock is monotonic: a wall-clock (NTP) step during a day-long run must not move the budget.
# budget clock = elapsed at resume + time since resume - excluded time (evaluations, checkpoints)
t_resume = time.monotonic()
elapsed_at_resume = elapsed_s
excluded_s = 0.0
t_last_ckpt = t_resume
# the tokens/s interval since the last log
t_last_log = t_resume
tokens_last_log = tokens_seen
excluded_last_log = 0.0
first_step = step


def budget_clock_s(now):
    """Seconds of the budget spent at monotonic time now."""
    return elapsed_at_resume + now - t_resume - excluded_s


while True:
    elapsed_s = budget_clock_s(time.monotonic())
    if ddp:
        # every rank takes rank 0's clock (it alone evaluates and writes) and stops if any was
        # signalled
        clock = torch.tensor([elapsed_s if master else 0.0, float(stop_signal is not None)])
        dist.all_reduce(clock, op=dist.ReduceOp.MAX, group=clock_group)
        elapsed_s = clock[0].item()
        stop_signal = stop_signal or ("signal" if clock[1].item() else None)
    p = step / max_steps if max_steps else elapsed_s / budget_s
    finished = p >= 1
    if finished or stop_signal or (stop_at_step and step >= stop_at_step):
        break
    if evals_done < len(eval_fractions) and p >= eval_fractions[evals_done]:
        t0 = pause_clock()
        if master and n_eval:
            val_loss, val_acc = evaluate()
            log({"step": step, "progress": p, "val_loss": val_loss, "val_acc": val_acc})
        evals_done += 1
        excluded_s += time.monotonic() - t0
    lr = learning_rate_at(p)
    for group in optimizer.param_groups:
        group["lr"] = lr
    current_batch = batch_size_at(p, micro_step_sequences)
    # a step dropped at a stop signal leaves the data position where this step found it
    data_at_step_start = (dict(data_state), micro_steps)
    result = train_step(model, optimizer, scaler, next_batch, current_batch // micro_step_sequences,
                        amp_ctx, grad_clip, stop_requested)
    if result is None:  # the checkpoint records the step's start; a resume redoes the whole step
        data_state, micro_steps = data_at_step_start
        break
    loss, skipped = result
    skipped_total += skipped
    skipped_run = (skipped_run + 1) * skipped
    skipped_worst = torch.maximum(skipped_worst, skipped_run)
    step += 1
    tokens_seen += current_batch * block_size

    log_now = step % log_interval == 0 or step == max_steps  # a step clock's last step is logged
    if log_now:
        # fp16's GradScaler legitimately skips ~16 steps in a row while it calibrates down from 2^16
        allowed = max_nonfinite_in_a_row + 16 * scaler.is_enabled()
        if skipped_worst.item() >= allowed:  # all ranks check, all stop
            raise CramError(f"{int(skipped_worst.item())} steps in a row had a non-finite loss "
                            f"(last at step {step}); lower --learning_rate or --grad_clip, or use "
                            f"--dtype=float32")
        if ddp:  # cheap proof that the ranks still hold the same weights
            sums = torch.stack([w.detach().float().sum() for w in raw_model.parameters()])
            checksum = sums.sum()[None]
            gathered = [torch.zeros_like(checksum) for _ in range(world_size)]
            dist.all_gather(gathered, checksum)
            rank_spread = (torch.cat(gathered).max() - torch.cat(gathered).min()).item()
        if master:
            now = time.monotonic()
            # as of this step's end, for the record (the loop's next pass agrees)
            elapsed_s = budget_clock_s(now)
            # evaluations and checkpoints are not training time
            dt = now - t_last_log - (excluded_s - excluded_last_log)
            tokens_per_sec = (tokens_seen - tokens_last_log) / max(dt, 1e-9)
            record = {"step": step, "loss": loss.item(), "lr": lr, "batch_size": current_batch,
                      "tokens_per_sec": tokens_per_sec,
                      "mfu": raw_model.flops_per_token() * tokens_per_sec / world_size / peak,
                      "data_wait": data_wait_s / max(dt, 1e-9),
                      "skipped": int(skipped_total.item()), "tokens_seen": tokens_seen,
                      "elapsed_s": elapsed_s}
            if not max_steps:  # under a step clock the budget plays no part
                record["remaining_s"] = max(0.0, budget_s - elapsed_s)
            if ddp:
                record["rank_spread"] = rank_spread
            log(record)
    if log_now or step == first_step + 1:
        # a new interval for tokens/s; the first starts after the first step, which compiles (tens
        # of seconds on a GPU): that counts against the budget, but the logged tokens/s and MFU
        # say how fast training runs (one sync, once; with --log_interval=1 the first record is
        # that step alone, compilation included)
        t_last_log = pause_clock()
        tokens_last_log = tokens_seen
        excluded_last_log = excluded_s
        data_wait_s = 0.0
    if time.monotonic() - t_last_ckpt > checkpoint_minutes * 60:
        t0 = pause_clock()
        elapsed_s = budget_clock_s(t0)
        checkpoint()
        excluded_s += time.monotonic() - t0
        t_last_ckpt = time.monotonic()

# the end: a last evaluation unless we were interrupted, and the checkpoint
if master and finished and n_eval and final_logged_step != step:
    val_loss, val_acc = evaluate()
    log({"step": step, "progress": min(p, 1.0), "val_loss": val_loss, "val_acc": val_acc,
         "final": True})
t0 = time.monotonic()
checkpoint()
if master:
    why = f"stopped by {stop_signal}" if stop_signal else "done"
    of_steps = f" of {max_steps}" if max_steps else ""
    of_budget = "" if max_steps else f" of the {budget_hours:g} h budget"
    print(f"{why}: step {step}{of_steps}, {tokens_seen:,} tokens, {elapsed_s / 3600:.3f} h"
          f"{of_budget}; checkpoint {ckpt_path} written in {time.monotonic() - t0:.1f} s")
if ddp:
    # the other ranks wait for rank 0's evaluation and checkpoint: tearing the group down under a
    # rank still using it can abort that rank ("terminate called without an active exception")
    dist.barrier(group=clock_group)
    dist.destroy_process_group()
