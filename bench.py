"""
Benchmark the real training step of train.py (same model, masking, optimizer, precision, compile and
runtime.train_step) and print throughput, MFU, memory and where the time goes.

    python bench.py                                     # the paper's 16 x 768 model, random tokens
    python bench.py --n_layer=4 --n_embd=256 --n_head=4 --n_inner=1024 --micro_batch_size=16
    python bench.py --data_dir=data/wikipedia --profile=True

Accepts train.py's setting names; the peak FLOP/s comes from the GPU table, else a measured matmul
(always measured on CPU), so MFU is against what this device can actually do.
"""
import gc
import time

import numpy as np
import torch

import configurator
from configurator import CramError
from model import Bert, configure_optimizer, mask_tokens
from prepare import Tokenizer, open_blocks, read_meta, read_token_counts
from runtime import (amp_context, autocast_dtype, bert_config, dtype_name, grad_scaler,
                     is_out_of_memory, model_settings, peak_flops, pick_device, synchronize,
                     to_device, train_step, wants_compile)

# -----------------------------------------------------------------------------
data_dir = ""  # a prepare.py folder for real blocks; empty = random tokens
# every BertConfig field is a setting of the same name, as in train.py (--norm_scheme=post, ...);
# block_size and vocab_size are the data's when --data_dir is given
globals().update(model_settings())
micro_batch_size = 128
accum_steps = 1  # micro batches per optimizer step
learning_rate = 1e-3
weight_decay = 0.01
betas = (0.9, 0.98)
eps = 1e-12
grad_clip = 0.5
warmup_steps = 3  # not timed: compilation and allocator warm-up
steps = 10  # timed optimizer steps
device = "auto"
dtype = "auto"
compile = None  # None: on for CUDA, off elsewhere
# or max-autotune (CUDA graphs and autotuned kernels), max-autotune-no-cudagraphs
compile_mode = "default"
find_max_micro_batch = False  # CUDA: double the micro batch while it fits, print the largest
profile = False  # write a torch profiler trace and print the ten costliest ops
trace_file = "bench_trace.json"  # where --profile writes the trace (open in ui.perfetto.dev)
peak_flops_per_sec = 0.0
seed = 1337
config = configurator.configure(globals())
# -----------------------------------------------------------------------------
configurator.require_at_least(1, micro_batch_size=micro_batch_size, accum_steps=accum_steps,
                              steps=steps, warmup_steps=warmup_steps)

device, device_type = pick_device(device)
ptdtype = autocast_dtype(device_type, dtype)
amp_ctx = amp_context(device_type, ptdtype)
use_compile = wants_compile(compile, device_type)
cuda_graphs = compile_mode in ("max-autotune", "reduce-overhead")
if use_compile and device_type == "cuda" and cuda_graphs and accum_steps > 1:
    # CUDA graphs replay into the same output memory: the next micro step overwrites the gradients
    raise CramError(f"--compile_mode={compile_mode} records CUDA graphs, which lose gradients "
                    f"across --accum_steps={accum_steps}: use --accum_steps=1 or "
                    f"--compile_mode=max-autotune-no-cudagraphs")
if device_type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = True
torch.manual_seed(seed)
if data_dir:
    meta = read_meta(data_dir)
    tok = Tokenizer.from_meta(meta)
    block_size, vocab_size = meta["block_size"], meta["vocab_size"]
    blocks = open_blocks(data_dir, "train", block_size)
    seen = torch.from_numpy(read_token_counts(data_dir, vocab_size) > 0)
else:
    tok = Tokenizer()
    n_ids = tok.n_ids
    if vocab_size < n_ids:  # random tokens and [MASK] use the tokenizer's ids
        raise CramError(f"--vocab_size={vocab_size}: the {tok.name} tokenizer's ids run to "
                        f"{n_ids - 1}; use at least {n_ids} (the default {tok.vocab_size} is that "
                        f"padded to a multiple of 64)")
model_config = bert_config(**{key: globals()[key] for key in model_settings()})


def build(micro_batch):
    model = Bert(model_config).to(device)
    random_pool = None
    if data_dir:  # as train.py: ids train.bin lacks are neither decoded nor drawn as replacements
        model.decodable.copy_(seen)
        random_pool = torch.nonzero(seen[:tok.n_bpe]).squeeze(1).to(device)
    optimizer = configure_optimizer(model, weight_decay, learning_rate, betas, eps, device_type)
    scaler = grad_scaler(device_type, ptdtype)
    compiled = torch.compile(model, mode=compile_mode, dynamic=False) if use_compile else model
    gen = torch.Generator(device=device).manual_seed(seed)
    state = {"cursor": 0, "wait_s": 0.0}

    def next_batch():
        t0 = time.perf_counter()
        if data_dir:
            rows = np.arange(state["cursor"], state["cursor"] + micro_batch) % len(blocks)
            state["cursor"] += micro_batch
            x = torch.from_numpy(blocks[rows].astype(np.int64))
            x = to_device(x, device)
        else:
            x = torch.randint(0, tok.n_bpe, (micro_batch, block_size), device=device, generator=gen)
        state["wait_s"] += time.perf_counter() - t0  # the host's part, as train.py counts it
        return mask_tokens(x, mask_fraction, tok.mask_id, tok.n_bpe, gen, random_pool)

    def step():
        return train_step(compiled, optimizer, scaler, next_batch, accum_steps, amp_ctx, grad_clip)
    return model, step, state


if find_max_micro_batch and device_type == "cuda":
    size, largest = micro_batch_size, 0
    while size <= 8192:
        try:
            model, step, _ = build(size)
            # AdamW's state appears after step 1 and CUDA graphs record on step 2
            for _ in range(3):
                loss = step()[0]
            loss.item()
            largest = size
            size *= 2
        except Exception as e:  # torch.compile may wrap the OOM in its own exception
            if not is_out_of_memory(e):
                raise
            break
        finally:
            model = step = loss = None
            gc.collect()
            # this size's graphs and CUDA-graph pools, else they hold memory and get reused
            torch._dynamo.reset()
            torch.cuda.empty_cache()
    print(f"largest micro batch that fits (powers of two from {micro_batch_size}): {largest}")

model, step, state = build(micro_batch_size)
if peak_flops_per_sec:
    peak, peak_source = peak_flops_per_sec, "setting"
else:
    peak, peak_source = peak_flops(device_type, ptdtype)
print(f"{model.num_params():,} parameters; {model_config}; device {device}, {dtype_name(ptdtype)}, "
      f"compile {use_compile} ({compile_mode})")

t0 = time.perf_counter()
step()[0].item()  # the first step compiles
synchronize(device_type)
first_step_s = time.perf_counter() - t0
# the paper's model on a CPU takes about a minute a step: say what is coming
print(f"first step {first_step_s:.1f}s (compilation included); {warmup_steps - 1} more warm-up "
      f"and {steps} timed steps follow", flush=True)
for _ in range(warmup_steps - 1):
    step()
synchronize(device_type)
if device_type == "cuda":
    torch.cuda.reset_peak_memory_stats()
state["wait_s"] = 0.0
t0 = time.perf_counter()
for _ in range(steps):
    loss, _ = step()
loss = loss.item()  # the only sync: the timed steps run back to back as in train.py
synchronize(device_type)
dt = time.perf_counter() - t0

if "measured" in peak_source:
    # a neighbour on a shared CPU can slow the whole start-up measurement (MFU would read over
    # 100%): measure again now and keep the faster, so that MFU errs low
    peak = max(peak, peak_flops(device_type, ptdtype)[0])
    peak_source += ", best of before and after"
print(f"peak {peak:.4g} FLOP/s ({peak_source})")
tokens = steps * accum_steps * micro_batch_size * block_size
tokens_per_sec = tokens / dt
mfu = model.flops_per_token() * tokens_per_sec / peak
print(f"tokens/s {tokens_per_sec:,.0f} | sequences/s {tokens_per_sec / block_size:,.1f} | "
      f"ms/step {1000 * dt / steps:.1f} | MFU {100 * mfu:.1f}% | "
      f"FLOPs/token {model.flops_per_token():.4g} | compile+first step {first_step_s:.1f}s | "
      f"data wait {100 * state['wait_s'] / dt:.1f}% | loss {loss:.3f}")
if device_type == "cuda":
    print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")

if profile:
    from torch.profiler import ProfilerActivity, profile as torch_profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(3):
            step()
        synchronize(device_type)
    prof.export_chrome_trace(trace_file)
    sort_by = "self_cuda_time_total" if device_type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort_by, row_limit=10))
    print(f"trace written to {trace_file} (open in chrome://tracing or ui.perfetto.dev)")
