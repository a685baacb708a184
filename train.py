"""
Pretrain the crammed BERT against the clock.

    python train.py --budget_hours=24                      # one GPU, the paper's recipe
    python train.py config/cram_cpu.py                     # a laptop CPU
    torchrun --standalone --nproc_per_node=4 train.py      # DDP on one node

Progress p = elapsed / budget drives the learning rate, the batch size ramp, evaluation and the stop.
The clock starts once data and model are set up; compilation counts, evaluation and checkpoint writes
do not. max_steps > 0 replaces the clock with p = step / max_steps, for exactly reproducible runs.
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
from model import (Bert, BertConfig, amp_context, autocast_dtype, batch_size_at, grad_scaler, learning_rate_at,
                   load_checkpoint, mask_tokens, peak_flops, pick_device, save_checkpoint, to_device, train_step,
                   wants_compile)
from prepare import Tokenizer, open_blocks, read_meta

# -----------------------------------------------------------------------------
# settings: the paper's final recipe; override with config/*.py files and --key=value
# I/O
data_dir = "data/wikipedia"  # a folder made by prepare.py
out_dir = "out"
init_from = "scratch"  # 'scratch' or 'resume' (from out_dir/ckpt.pt: the clock, schedule and data order go on)
overwrite = False  # a scratch run refuses to replace an existing out_dir/ckpt.pt unless this is True
log_interval = 10  # optimizer steps between logs; the only point where the steady loop waits for the device
eval_fractions = (0.25, 0.5, 0.75)  # of the budget; there is always a final evaluation too
eval_blocks = 1024  # fixed validation blocks with fixed masks: comparable across runs and resumes
checkpoint_minutes = 30.0
wandb_log = False
wandb_project = "cram"
wandb_run_name = "cram"
# model (block_size and vocab_size come from the data's meta.json; 0 = take them from there)
n_layer = 16
n_head = 12
n_embd = 768
n_inner = 3072
dropout = 0.0
block_size = 0
vocab_size = 0
mask_fraction = 0.25  # exactly round(0.25 * block_size) masked per sequence: 80% [MASK], 10% random, 10% kept
# batch: a linear ramp from one micro step to batch_size over the first batch_ramp of the budget
batch_size = 8192  # sequences per optimizer step at the end of the ramp
batch_ramp = 0.6
micro_batch_size = 128  # sequences per forward pass; sized for a 24 GB GPU at the default model
# optimizer and schedule
learning_rate = 1e-3  # peak
schedule = "triangle"  # triangle | trapezoid | cosine
warmup_fraction = 0.1  # trapezoid and cosine
cooldown_fraction = 0.2  # trapezoid
weight_decay = 0.01
betas = (0.9, 0.98)
eps = 1e-12
grad_clip = 0.5
max_nonfinite_in_a_row = 5  # steps with a non-finite loss are skipped; this many in a row stop the run
# budget
budget_hours = 24.0
max_steps = 0  # > 0: a step clock instead of the wall clock
stop_at_step = 0  # > 0: stop here with a checkpoint as if interrupted (staged runs, resume tests)
# system
device = "auto"  # auto: cuda, then mps, then cpu
dtype = "auto"  # auto: bf16 where the hardware has it, fp16 on older CUDA GPUs, else float32
compile = None  # None: on for CUDA, off elsewhere
peak_flops_per_sec = 0.0  # for MFU; 0 = the GPU table, else a measured matmul
seed = 1337
backend = "nccl"  # DDP on CUDA; CPU runs use gloo
config = configurator.configure(globals())
# -----------------------------------------------------------------------------
require_at_least(1, micro_batch_size=micro_batch_size, batch_size=batch_size, log_interval=log_interval)
require_at_least(0, max_steps=max_steps, stop_at_step=stop_at_step, learning_rate=learning_rate)
configurator.require_folder("out_dir", out_dir)
if budget_hours <= 0 and max_steps <= 0:
    raise CramError(f"--budget_hours={budget_hours}: give a positive budget (or a step clock with --max_steps)")

ddp = int(os.environ.get("RANK", -1)) != -1
if ddp:
    device, device_type = pick_device(device)
    dist.init_process_group(backend=backend if device_type == "cuda" else "gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if device_type == "cuda":
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    else:
        device = device_type
else:
    rank, world_size = 0, 1
    device, device_type = pick_device(device)
master = rank == 0
ptdtype = autocast_dtype(device_type, dtype)
amp_ctx = amp_context(device_type, ptdtype)
scaler = grad_scaler(device_type, ptdtype)
use_compile = wants_compile(compile, device_type)
if device_type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (e.g. the loss) on tensor cores
    torch.backends.cudnn.allow_tf32 = True
torch.manual_seed(seed)

# data: memmapped uint16 blocks from prepare.py
meta_path = os.path.join(data_dir, "meta.json")
meta = read_meta(data_dir)
tok = Tokenizer.from_meta(meta, meta_path)
if block_size and block_size != meta["block_size"]:
    raise CramError(f"--block_size={block_size} contradicts {meta_path} (block_size {meta['block_size']}): "
                    f"drop the setting or re-run prepare.py with --block_size={block_size}")
if vocab_size and vocab_size != meta["vocab_size"]:
    raise CramError(f"--vocab_size={vocab_size} contradicts {meta_path} (vocab_size {meta['vocab_size']}): drop the setting")
block_size = meta["block_size"]


train_data, val_data = open_blocks(data_dir, "train", block_size), open_blocks(data_dir, "val", block_size)
n_train = len(train_data)
if n_train == 0:
    raise CramError(f"{data_dir}/train.bin holds no blocks: prepare more text (or a smaller --block_size in prepare.py)")
if batch_size % (micro_batch_size * world_size):
    raise CramError(f"--batch_size={batch_size} must be a multiple of micro_batch_size x ranks = {micro_batch_size * world_size}")

# model, optimizer, and on resume everything that makes the continuation exact
model_args = dict(vocab_size=meta["vocab_size"], block_size=block_size, n_layer=n_layer, n_head=n_head,
                  n_embd=n_embd, n_inner=n_inner, dropout=dropout, mask_fraction=mask_fraction)
ckpt_path = os.path.join(out_dir, "ckpt.pt")
step, tokens_seen, elapsed_s, micro_steps, evals_done = 0, 0, 0.0, 0, 0
data_state = {"epoch": 0, "cursor": 0}
if init_from == "resume":
    ckpt = load_checkpoint(ckpt_path, "cpu")  # load_state_dict moves tensors where they belong
    # the data position (epoch, cursor) only means something in the same corpus
    for key in ("source", "tokenizer", "vocab_size", "block_size", "order", "seed", "train_blocks", "val_blocks"):
        if ckpt["meta"].get(key) != meta.get(key):
            raise CramError(f"{ckpt_path} was trained on other data ({key} {ckpt['meta'].get(key)!r}, here "
                            f"{meta.get(key)!r} in {data_dir}): point --data_dir at the data it was trained on")
    # a resumed run keeps its model and its seed (the data order and masks follow it): a setting that differs
    # would be silently ignored or would re-read and skip blocks, so refuse it
    mine = {**model_args, "seed": seed}
    for key, value in {**ckpt["model_args"], "seed": ckpt["config"]["seed"]}.items():
        if mine.get(key) != value:
            raise CramError(f"--{key}={mine.get(key)} but {ckpt_path} has {key}={value}: a resumed run keeps its "
                            f"model and seed; pass the settings (or config file) it was started with")
    changed = [f"{k} {v!r} -> {config[k]!r}" for k, v in ckpt["config"].items()
               if k in config and config[k] != v and k not in ("init_from", "overwrite")]
    if master and changed:  # allowed (a longer budget, say), but never unnoticed
        print(f"resume: settings that differ from the checkpoint's run: {', '.join(changed)}")
    step, tokens_seen, elapsed_s, micro_steps = ckpt["step"], ckpt["tokens_seen"], ckpt["elapsed_s"], ckpt["micro_steps"]
    evals_done = ckpt["evals_done"]
    data_state = dict(ckpt["data_state"])
elif init_from != "scratch":
    raise CramError(f"--init_from={init_from}: use 'scratch' or 'resume'")
elif master and os.path.exists(ckpt_path) and not overwrite:
    raise CramError(f"{ckpt_path} exists: continue it with --init_from=resume, or pass --overwrite=True or another --out_dir")
model = Bert(BertConfig(**model_args)).to(device)
optimizer = model.configure_optimizers(weight_decay, learning_rate, betas, eps, device_type)
if init_from == "resume":
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt["scaler"] and scaler.is_enabled():  # empty when the run it came from used bf16 or fp32
        scaler.load_state_dict(ckpt["scaler"])
    torch.set_rng_state(ckpt["rng_cpu"])
    del ckpt  # free the host copy of the weights
raw_model = model
if ddp:
    # the only buffer is the constant sinusoid: no need to send it every forward (torch 2.13 renamed the option)
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                      else {"broadcast_buffers": False})
    model = DDP(model, device_ids=[int(os.environ["LOCAL_RANK"])] if device_type == "cuda" else None, **no_buffer_sync)
    clock_group = dist.new_group(backend="gloo")  # the clock on CPU tensors: agreeing on it never waits for the GPU
eval_model = raw_model  # rank 0 evaluates alone, so never through DDP (its forward talks to the other ranks)
if use_compile:
    # static shapes throughout: one graph for training, one for eval; dynamic=False keeps the eval shape from
    # turning the batch dimension symbolic (slower kernels). DDP is compiled, not wrapped around a compiled
    # model: dynamo then splits the graph at DDP's gradient buckets, so their all-reduce overlaps the backward
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
    need, parts = micro_batch_size * world_size, []
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
    # data wait is the host's part; the masking below is device work, and a kernel launch there can block on a
    # full GPU queue, which is the GPU being busy, not waiting for data
    data_wait_s += time.perf_counter() - t0
    # masks from a seed per (micro step, rank): exact on resume with no generator state to carry
    mask_gen.manual_seed(seed * 1_000_003 + micro_steps * world_size + rank)
    micro_steps += 1
    return mask_tokens(x, mask_fraction, tok.mask_id, tok.n_bpe, mask_gen)


# validation: fixed blocks, fixed masks, whole eval batches (one more compiled shape, no recompiles)
eval_batch = max(1, min(micro_batch_size, len(val_data), eval_blocks))
n_eval = min(eval_blocks, len(val_data)) // eval_batch * eval_batch  # 0: no validation data, no evaluation
val_x = torch.from_numpy(val_data[:n_eval].astype(np.int64)).to(device)
val_x, val_y = mask_tokens(val_x, mask_fraction, tok.mask_id, tok.n_bpe, torch.Generator(device=device).manual_seed(0))


@torch.no_grad()
def evaluate():
    eval_model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for i in range(0, n_eval, eval_batch):
        x, y = val_x[i: i + eval_batch], val_y[i: i + eval_batch]
        with amp_ctx:
            logits, loss = eval_model(x, y)
        loss_sum += loss.item()
        targets = y.gather(1, raw_model.masked_positions(y))  # aligned with the sparse logits
        correct += (logits.argmax(-1) == targets).sum().item()
        count += (targets != -100).sum().item()
    eval_model.train()
    return loss_sum / (n_eval // eval_batch), correct / count


def log(record):
    if not master:
        return
    print(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()), flush=True)
    with open(log_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    if wandb_log:
        wandb.log(record, step=record["step"])


def checkpoint():
    if master:
        save_checkpoint(ckpt_path, {
            "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "model_args": model_args, "meta": meta, "config": config, "step": step, "tokens_seen": tokens_seen,
            "elapsed_s": elapsed_s, "micro_steps": micro_steps, "evals_done": evals_done, "data_state": data_state,
            "rng_cpu": torch.get_rng_state()})


def pause_clock():
    """Start timing work the budget does not count; wait for queued GPU work first, so it is not counted too."""
    if device_type == "cuda":
        torch.cuda.synchronize()
    return time.monotonic()


# SIGTERM (schedulers) or Ctrl-C: finish the step, write a checkpoint, exit 0
stop_signal = None


def request_stop(signum, frame):
    global stop_signal
    stop_signal = signal.Signals(signum).name
    signal.signal(signum, signal.SIG_DFL)  # a second signal kills at once


signal.signal(signal.SIGTERM, request_stop)
signal.signal(signal.SIGINT, request_stop)

final_logged_step = -1  # a resumed run that had already finished: its final evaluation is in the log
if master:
    os.makedirs(out_dir, exist_ok=True)
    log_path = os.path.join(out_dir, "log.jsonl")
    if os.path.exists(log_path):  # scratch: a new log; resume: drop the lines of steps the checkpoint did not keep
        kept = []
        with open(log_path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a kill -9
                    continue
                if init_from == "resume" and record["step"] <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
                    final_logged_step = record["step"] if record.get("final") else final_logged_step
        with open(log_path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(log_path + ".tmp", log_path)
    if wandb_log:
        import wandb
        wandb.init(project=wandb_project, name=wandb_run_name, config=config)
peak, peak_source = (peak_flops_per_sec, "setting") if peak_flops_per_sec else peak_flops(device_type, ptdtype)
budget_s = budget_hours * 3600
if master:
    print(f"model: {raw_model.num_params():,} parameters, {model_args}")
    print(f"data: {n_train:,} train blocks, {n_eval} eval blocks of {block_size} tokens; device {device}, "
          f"{str(ptdtype).split('.')[-1]}, compile {use_compile}, {world_size} rank(s); peak {peak:.3g} FLOP/s ({peak_source}); "
          f"the unigram entropy a masked LM must beat: {meta.get('unigram_entropy', float('nan')):.3f} nats")


def budget_clock_s(now):
    """Seconds of the budget spent at monotonic time now: compilation counts, evaluation and checkpoints don't."""
    return elapsed_at_resume + now - t_resume - excluded_s


# the loop -------------------------------------------------------------------------------------
skipped_total = torch.zeros((), device=device)  # non-finite counters live on the device: no sync per step
skipped_run = torch.zeros((), device=device)
skipped_worst = torch.zeros((), device=device)
# the clock is monotonic: a wall-clock (NTP) step during a day-long run must not move the budget
t_last_log, tokens_last_log, excluded_last_log, first_step = time.monotonic(), tokens_seen, 0.0, step
t_resume, elapsed_at_resume, excluded_s, t_last_ckpt = time.monotonic(), elapsed_s, 0.0, time.monotonic()
while True:
    elapsed_s = budget_clock_s(time.monotonic())
    if ddp:  # every rank takes rank 0's clock (it alone evaluates and writes) and stops if any was signalled
        clock = torch.tensor([elapsed_s if master else 0.0, float(stop_signal is not None)])
        dist.all_reduce(clock, op=dist.ReduceOp.MAX, group=clock_group)
        elapsed_s, stop_signal = clock[0].item(), (stop_signal or ("signal" if clock[1].item() else None))
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
    lr = learning_rate_at(p, schedule, learning_rate, warmup_fraction, cooldown_fraction)
    for group in optimizer.param_groups:
        group["lr"] = lr
    current_batch = batch_size_at(p, batch_size, micro_batch_size * world_size, batch_ramp)
    loss, skipped = train_step(model, optimizer, scaler, next_batch, current_batch // (micro_batch_size * world_size),
                               amp_ctx, grad_clip)
    skipped_total += skipped
    skipped_run = (skipped_run + 1) * skipped
    skipped_worst = torch.maximum(skipped_worst, skipped_run)
    step += 1
    tokens_seen += current_batch * block_size

    log_now = step % log_interval == 0 or step == max_steps  # a step clock's last step is always logged
    if log_now:
        # fp16's GradScaler legitimately skips ~16 steps in a row while it calibrates down from 2^16
        if skipped_worst.item() >= max_nonfinite_in_a_row + 16 * scaler.is_enabled():  # all ranks check, all stop
            raise CramError(f"{int(skipped_worst.item())} steps in a row had a non-finite loss (last at step {step}); "
                            f"lower --learning_rate or --grad_clip, or use --dtype=float32")
        if ddp:  # cheap proof that the ranks still hold the same weights
            checksum = torch.stack([p_.detach().float().sum() for p_ in raw_model.parameters()]).sum()[None]
            sums = [torch.zeros_like(checksum) for _ in range(world_size)]
            dist.all_gather(sums, checksum)
            rank_spread = (torch.cat(sums).max() - torch.cat(sums).min()).item()
        if master:
            now = time.monotonic()
            elapsed_s = budget_clock_s(now)  # as of this step's end, for the record (the loop's next pass agrees)
            dt = now - t_last_log - (excluded_s - excluded_last_log)  # eval and checkpoint time are not training time
            tokens_per_sec = (tokens_seen - tokens_last_log) / max(dt, 1e-9)
            record = {"step": step, "loss": loss.item(), "lr": lr, "batch_size": current_batch,
                      "tokens_per_sec": tokens_per_sec, "mfu": raw_model.estimate_mfu(tokens_per_sec / world_size, peak),
                      "data_wait": data_wait_s / max(dt, 1e-9), "skipped": int(skipped_total.item()),
                      "tokens_seen": tokens_seen, "elapsed_s": elapsed_s}
            if not max_steps:  # under a step clock the budget plays no part
                record["remaining_s"] = max(0.0, budget_s - elapsed_s)
            if ddp:
                record["rank_spread"] = rank_spread
            log(record)
    if log_now or step == first_step + 1:
        # a new interval for tokens/s; the first starts after the first step, which compiles (tens of seconds on
        # a GPU): that counts against the budget, but the logged tokens/s and MFU should say how fast training
        # runs (one sync, once; with --log_interval=1 the first record is that step alone, compilation included)
        t_last_log, tokens_last_log, excluded_last_log, data_wait_s = pause_clock(), tokens_seen, excluded_s, 0.0
    if time.monotonic() - t_last_ckpt > checkpoint_minutes * 60:
        t0 = pause_clock()
        elapsed_s = budget_clock_s(t0)
        checkpoint()
        excluded_s += time.monotonic() - t0
        t_last_ckpt = time.monotonic()

# the end: a last evaluation unless we were interrupted, and the checkpoint
if master and finished and n_eval and final_logged_step != step:
    val_loss, val_acc = evaluate()
    log({"step": step, "progress": min(p, 1.0), "val_loss": val_loss, "val_acc": val_acc, "final": True})
checkpoint()
if master:
    why = f"stopped by {stop_signal}" if stop_signal else "done"
    of_steps, of_budget = (f" of {max_steps}", "") if max_steps else ("", f" of the {budget_hours:g} h budget")
    print(f"{why}: step {step}{of_steps}, {tokens_seen:,} tokens, {elapsed_s / 3600:.3f} h{of_budget}; "
          f"checkpoint {ckpt_path}")
if ddp:
    # the other ranks wait for rank 0's evaluation and checkpoint: tearing the group down under a rank still
    # using it can abort that rank ("terminate called without an active exception")
    dist.barrier(group=clock_group)
    dist.destroy_process_group()
