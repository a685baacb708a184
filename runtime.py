"""
What train.py, bench.py and finetune_glue.py share at run time, so that each has it exactly once:
the device and its precision, the peak FLOP/s that MFU is measured against, the one training step
(bench.py must time the very step train.py runs), the one checkpoint format. model.py stays the net.
"""
import ctypes
import dataclasses
import math
import os
import sys
import time
from contextlib import nullcontext

import torch

from configurator import CramError
from model import BertConfig


def bert_config(**fields):
    """BertConfig from settings: a bad shape is a ValueError in model.py, a CramError here."""
    try:
        return BertConfig(**fields)
    except ValueError as e:
        raise CramError(str(e)) from None


def model_settings():
    """Every BertConfig field and its default: train.py and bench.py make each a setting of the same
    name, so a switch added to model.py is a --setting at once."""
    return {f.name: f.default for f in dataclasses.fields(BertConfig)}


# -----------------------------------------------------------------------------
# devices

def pick_device(device="auto"):
    """(device, device_type): 'auto' picks cuda, then mps, then cpu. 'cuda:1' is of type 'cuda'
    (every 'if cuda' must test the type) and becomes the current device, so that synchronize(), the
    device name and the peak matmul address it and not GPU 0."""
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        device_type = torch.device(device).type
    except RuntimeError:
        raise CramError(f"--device={device}: use auto, cpu, cuda, cuda:N or mps") from None
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if device_type in available and not available[device_type]():
        raise CramError(f"--device={device}: this torch ({torch.__version__}) sees no "
                        f"{device_type} device; use --device=auto or cpu")
    if device_type == "cuda" and torch.device(device).index is not None:
        torch.cuda.set_device(device)
    if device_type == "cpu":
        keep_freed_host_memory()
    return device, device_type


def synchronize(device_type):
    """Wait for the device's queued work: CUDA and MPS run asynchronously; every timing needs it."""
    if device_type == "cuda":
        torch.cuda.synchronize()
    elif device_type == "mps":
        torch.mps.synchronize()


def wants_compile(compile, device_type):
    """--compile: True, False, or None for on with CUDA and off elsewhere (on a CPU it gains nothing
    measurable and its compile time would eat a short budget)."""
    if compile not in (None, True, False):  # --compile=false would be a truthy string
        raise CramError(f"--compile={compile!r}: use one of None, True, False")
    return device_type == "cuda" if compile is None else compile


def to_device(x, device):
    """A host batch onto the device; on CUDA through pinned memory without blocking, so the copy
    queues behind the running step instead of waiting for it (.to() from pageable memory syncs)."""
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def is_out_of_memory(error):
    """A CUDA OOM as it may arrive: itself, or wrapped by torch.compile (BackendCompilerFailed keeps
    it in .inner_exception, Triton re-raises it as a RuntimeError quoting it). Not Triton's 'out of
    resource: shared memory', which is a kernel config, not a full device."""
    for _ in range(8):  # a short chain; never loop on a cycle
        if error is None:
            return False
        if isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower():
            return True
        error = getattr(error, "inner_exception", None) or error.__cause__ or error.__context__
    return False


def keep_freed_host_memory():
    """glibc returns every allocation over 32 MB (the 100 MB of MLM logits, the 51 MB embedding
    gradient) to the OS on free, so each step would page-fault them in again: ~17% of a 4 x 256 CPU
    step. Keep them; the cost is resident memory at the step's peak (1.1 GB, not 0.7 GB there)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: serve large blocks from the heap, not fresh mmaps
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: and don't hand the heap's top back either
    except (OSError, AttributeError):  # not glibc (musl, ...): keep its defaults
        pass


# -----------------------------------------------------------------------------
# precision

def cpu_has_matrix_units(dtype):
    """What the CPU reports, not a timing (a one-shot timing on a busy machine chooses differently
    from run to run). Without these units a bf16 or fp16 matmul runs 30-250x slower than fp32."""
    def reports(flag):
        return getattr(torch.cpu, flag, lambda: False)()
    if dtype == torch.bfloat16:
        return reports("_is_avx512_bf16_supported") or reports("_is_amx_tile_supported")
    if dtype == torch.float16:
        return reports("_is_amx_fp16_supported")  # avx512_fp16 alone: fp16 matmuls 32x slower
    return True


def cuda_has_native_bf16():
    """sm80 (Ampere) and later. torch.cuda.is_bf16_supported() also says yes to the emulated bf16 of
    a 2080 Ti, T4 or V100, which runs without tensor cores, several times slower than their fp16."""
    return torch.cuda.get_device_capability()[0] >= 8


def autocast_dtype(device_type, dtype="auto", trained_in=None):
    """bf16 where the hardware does bf16 math, fp16 (with a GradScaler) on older CUDA GPUs, else
    float32. trained_in: the checkpoint whose precision dtype is (a resume keeps it)."""
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise CramError(f"--dtype={dtype}: use auto, float32, bfloat16 or float16")
    if dtype == "auto":
        if device_type == "cuda":
            return torch.bfloat16 if cuda_has_native_bf16() else torch.float16
        if device_type == "cpu" and cpu_has_matrix_units(torch.bfloat16):
            return torch.bfloat16
        return torch.float32
    chosen = getattr(torch, dtype)
    if device_type == "cpu" and not cpu_has_matrix_units(chosen):
        # asked for by name or by a checkpoint: say why it would crawl
        if trained_in:
            raise CramError(f"{trained_in} was trained in {dtype}, which this CPU has no matrix "
                            f"units for (many times slower than float32): continue it with "
                            f"--dtype=float32")
        raise CramError(f"--dtype={dtype}: this CPU has no {dtype} matrix units, so its {dtype} "
                        f"matmuls run many times slower than float32; use --dtype=auto or float32")
    return chosen


def dtype_name(dtype):
    return str(dtype).split(".")[-1]


def amp_context(device_type, dtype):
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def grad_scaler(device_type, dtype):
    # fp16 needs loss scaling, bf16 does not
    return torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)


# dense (no sparsity) tensor-core bf16/fp16 FLOP/s with fp32 accumulation, from the data sheets
PEAK_FLOPS = {
    "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200 NVL": 835e12, "H200": 989e12,
    "A100": 312e12, "A6000": 154.8e12, "RTX 4090": 165.2e12, "3090": 71e12, "2080 Ti": 53.8e12,
    "A4000": 76.7e12, "T4": 65e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12, "A10G": 70e12,
    "V100": 125e12,
}


def matmul_flops(device_type, dtype, n, reps=10, max_s=1.0):
    """FLOP/s of an n x n matmul on the current device, the best of reps (at least 3, fewer than reps
    once max_s has passed)."""
    # its own generator: drawing from the global one would shift a run's random stream
    generator = torch.Generator(device_type).manual_seed(0)
    a = torch.randn(n, n, device=device_type, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device_type, dtype=dtype, generator=generator)
    best, start = float("inf"), time.perf_counter()
    for rep in range(reps + 1):  # the first is a warm-up; the best, as a shared CPU has slow reps
        synchronize(device_type)
        t0 = time.perf_counter()
        a @ b
        synchronize(device_type)
        best = min(best, time.perf_counter() - t0)
        # a CPU without fast units takes ~0.2 s a rep: every run (and test) would pay 2 s to report MFU;
        # under a second of reps reads within ~5% of ten (the first reps run slow while the clock ramps)
        if rep >= 3 and time.perf_counter() - start > max_s:
            break
    return 2 * n**3 / best


def peak_flops(device_type, dtype):
    """The device's peak FLOP/s: the table for known GPUs, else measured with a large matmul (always
    measured on CPU)."""
    if device_type == "cuda" and dtype != torch.float32:
        name = torch.cuda.get_device_name()
        for key in sorted(PEAK_FLOPS, key=len, reverse=True):  # longest first: L40S, L40, L4
            if key in name:
                return PEAK_FLOPS[key], f"{name} (spec sheet)"
    n = 8192 if device_type == "cuda" else 2048
    measured = f"{device_type} {dtype_name(dtype)} (measured {n}x{n} matmul)"
    return matmul_flops(device_type, dtype, n), measured


# -----------------------------------------------------------------------------
# the training step

def warmup_cosine(p, warmup_fraction):
    """The factor of the peak learning rate at progress p in [0, 1]: linear from 0 over
    warmup_fraction, then a cosine down to 0 (train.py's --schedule=cosine; finetune_glue.py's)."""
    if p < warmup_fraction:
        return p / warmup_fraction
    decay = min(1.0, (p - warmup_fraction) / (1 - warmup_fraction))
    return 0.5 * (1 + math.cos(math.pi * decay))


def train_step(model, optimizer, scaler, next_batch, accum_steps, amp_ctx, grad_clip,
               should_stop=None):
    """One optimizer step over accum_steps micro batches from next_batch() -> (inputs, labels) or,
    for fine-tuning, (inputs, labels, attention_mask). Returns (mean loss, skipped) as device
    tensors: nothing here waits for the device. If should_stop() turns true before a micro batch,
    the step is dropped (no update, gradients cleared) and None is returned."""
    loss_sum = 0.0
    for micro in range(accum_steps):
        if should_stop is not None and should_stop():
            optimizer.zero_grad(set_to_none=True)
            return None
        inputs, labels, *attention_mask = next_batch()
        # under DDP, all-reduce the gradients only on the last micro step
        last = micro == accum_steps - 1
        with nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            with amp_ctx:
                _, loss = model(inputs, *attention_mask, labels=labels)
            scaler.scale(loss / accum_steps).backward()
        loss_sum = loss_sum + loss.detach()
    scaler.unscale_(optimizer)
    # grad_clip 0 means no clipping; the norm is computed either way, for the non-finite check
    max_norm = grad_clip if grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    skipped = (~torch.isfinite(grad_norm)).float()
    if not scaler.is_enabled():  # fp16's GradScaler does the same itself
        if optimizer.defaults.get("fused"):
            # fused AdamW then leaves weights and state untouched, without a sync
            optimizer.found_inf = skipped
        elif skipped.item():  # other optimizers: the one sync, on devices without a fused AdamW
            optimizer.zero_grad(set_to_none=True)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum / accum_steps, skipped


# -----------------------------------------------------------------------------
# the one checkpoint format: train.py writes it; train.py (resume), finetune_glue.py and
# fill_mask.py read it

CKPT_FORMAT = "cram-ckpt-v1"
CKPT_KEYS = ("model", "model_args", "meta", "step", "tokens_seen")


def save_checkpoint(path, ckpt):
    """Write atomically: a kill mid-write leaves the previous checkpoint whole. Refuses non-finite
    weights."""
    weights = ckpt["model"].items()
    bad = [k for k, v in weights if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CramError(f"refusing to write {path}: non-finite weights in {bad[:3]}; "
                        f"lower learning_rate or check the data")
    tmp = path + ".tmp"
    try:
        torch.save({"format": CKPT_FORMAT, **ckpt}, tmp)
    except BaseException:  # a full disk: no half-written file of the model's size left behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def load_weights(model, state, path):
    """Strict, in one line: a checkpoint written by another version of the network (a fork that renamed
    or reshaped a layer) is refused by name instead of being half loaded or failing with a page."""
    check_weights(model, state, path)
    model.load_state_dict(state)


def check_weights(model, state, path):
    """load_weights' refusal without the loading: names and shapes are all it reads, so a model built
    on the meta device (no memory, no init) checks a checkpoint before hours of other work."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or reshaped:
        kinds = (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped))
        found = (f"{kind} {keys[:3]}" for kind, keys in kinds if keys)
        raise CramError(f"{path}: its weights do not fit this model.py ({'; '.join(found)}): load it "
                        f"with the model.py that wrote it")


def load_checkpoint(path, device="cpu"):
    if not os.path.isfile(path):
        raise CramError(f"{path}: no such checkpoint; train one with train.py, or give the right "
                        f"path")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)  # never unpickles code
    except Exception as e:
        raise CramError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}); "
                        f"it is corrupt, truncated or not ours") from None
    complete = isinstance(ckpt, dict) and all(k in ckpt for k in CKPT_KEYS)
    if not complete or ckpt.get("format") != CKPT_FORMAT:
        raise CramError(f"{path}: not a cram checkpoint (format {CKPT_FORMAT} with keys "
                        f"{', '.join(CKPT_KEYS)})")
    return ckpt
