"""
The crammed BERT of Geiping & Goldstein, "Cramming: Training a Language Model on a Single GPU in One
Day" (arXiv 2212.14034), final recipe, in one file: the model, its masking, its optimizer groups, its
FLOP count, the one training step train.py and bench.py share, and the one checkpoint format.

The tweaks that make it cram, each a BertConfig field or visible below:
- no biases in Linear layers (LayerNorms keep theirs): fewer parameters, same quality per step
- pre-LayerNorm blocks with a final LayerNorm: stable at the high peak learning rate
- gated GELU feed-forward (GLU): n_embd -> n_inner, half gates the other half, n_inner/2 -> n_embd
- scaled sinusoidal positions: fixed sinusoid times one learnable scalar; no token-type embedding
- sparse prediction: only the masked positions reach the 50k-word decoder, tied to the embedding
"""
import ctypes
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from configurator import CramError, require_at_least, require_one_of


@dataclass
class BertConfig:
    vocab_size: int = 50304  # the tokenizer's 50261 ids padded to a multiple of 64
    block_size: int = 128
    n_layer: int = 16
    n_head: int = 12
    n_embd: int = 768
    n_inner: int = 3072  # the gated FFN's first projection; its output is half as wide
    dropout: float = 0.0  # pretraining runs without dropout; fine-tuning uses 0.1
    mask_fraction: float = 0.25  # masked positions per sequence: fixes the sparse decoder's shapes
    norm_eps: float = 1e-12

    def __post_init__(self):
        # train.py, bench.py and finetune_glue.py name their settings like these fields: refuse a bad shape here
        require_at_least(1, **{k: getattr(self, k) for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_inner")})
        if self.n_embd % self.n_head:
            raise CramError(f"--n_embd={self.n_embd} is not a multiple of --n_head={self.n_head}: every head gets n_embd / n_head dims")
        if self.n_inner % 2:
            raise CramError(f"--n_inner={self.n_inner} must be even: half of the gated FFN's width gates the other half")
        masked = round(self.mask_fraction * self.block_size)  # as mask_tokens counts them
        if not 0 < masked <= self.block_size:
            raise CramError(f"--mask_fraction={self.mask_fraction} masks {masked} of {self.block_size} positions per "
                            f"block: choose one in (0, 1], the paper uses 0.25")
        if not 0 <= self.dropout < 1:
            raise CramError(f"--dropout={self.dropout}: must be in [0, 1)")


def sinusoid(n_pos, dim):
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float) / dim)
    angles = torch.arange(n_pos, dtype=torch.float)[:, None] * inv_freq[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)[:, :dim]  # an odd width drops the last cosine


class Embedding(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        # non-persistent: the sinusoid is recomputed, so it is neither a parameter nor a checkpoint key
        self.register_buffer("pos", sinusoid(config.block_size, config.n_embd), persistent=False)
        self.pos_scale = nn.Parameter(torch.tensor(config.n_embd ** -0.5))
        self.ln = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, idx):
        return self.drop(self.ln(self.wte(idx) + self.pos_scale * self.pos[: idx.size(1)]))


class SelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)  # one fused matmul for q, k, v
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, attn_mask=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        # bidirectional; with no mask (pretraining: blocks are full) SDPA takes the flash kernel on GPU
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class GatedFFN(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, config.n_inner, bias=False)
        self.proj = nn.Linear(config.n_inner // 2, config.n_embd, bias=False)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x):
        x, gate = self.fc(x).chunk(2, dim=-1)
        return self.drop(self.proj(F.gelu(gate) * x))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.ffn = GatedFFN(config)

    def forward(self, x, attn_mask=None):
        x = x + self.attn(self.ln1(x), attn_mask)
        return x + self.ffn(self.ln2(x))


class CramModule(nn.Module):
    def _init_weights(self, module):
        # normal(0, 0.02) for every Linear and embedding weight, as in BERT and the paper
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def configure_optimizers(self, weight_decay, learning_rate, betas, eps, device_type):
        # decay matrices and embeddings; not LayerNorm weights, biases or the position scale (all < 2-D)
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        # fused AdamW: one kernel for all parameters (CUDA and CPU), and it skips a step with
        # non-finite gradients without a host sync (see train_step)
        fused = device_type in ("cuda", "cpu")
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=fused)


class MaskedLMLoss(torch.autograd.Function):
    """F.cross_entropy(logits, targets, ignore_index=-100), value and gradient, in fewer passes over the
    (masked positions x vocabulary) logits, on CPU the largest tensor of a step: the forward keeps one fused
    softmax and the backward turns it into the gradient (p - onehot) / n in place, where log_softmax, a zeroed
    one-hot gradient and log_softmax's backward each sweep it (bench.py: see README, Performance)."""

    @staticmethod
    def forward(ctx, logits, targets):
        valid = targets.ne(-100)
        t = targets.clamp(min=0)[:, None]
        probs = torch.softmax(logits.float(), dim=-1)
        n = valid.sum().clamp(min=1)
        # -log p: a p under float32's smallest normal (a target 87 nats below the rest) reads as 87.3, not inf
        nll = probs.gather(1, t).squeeze(1).clamp_min(torch.finfo(probs.dtype).tiny).log().neg()
        ctx.save_for_backward(probs, t, valid, n)
        ctx.logits_dtype = logits.dtype
        return (nll * valid).sum() / n

    @staticmethod
    def backward(ctx, grad_loss):
        probs, t, valid, n = ctx.saved_tensors
        scale = (grad_loss / n * valid)[:, None].to(probs.dtype)
        # in place: probs is not needed again (a second backward is refused by the saved tensor's version check)
        grad = probs.mul_(scale).scatter_add_(1, t, -scale)
        return grad.to(ctx.logits_dtype), None


class Bert(CramModule):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed = Embedding(config)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        # the MLM decoder: no head transform, no bias, its weight is the token embedding
        self.decoder = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.decoder.weight = self.embed.wte.weight
        self.apply(self._init_weights)

    def encode(self, idx, attention_mask=None):
        # attention_mask (B, T): True/1 for real tokens; padded keys are hidden from every query
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)

    def forward(self, idx, labels=None, attention_mask=None):
        """labels: original ids at masked positions, -100 elsewhere, exactly round(mask_fraction * T)
        masked per row (mask_tokens makes them so). With labels, logits are only for those positions."""
        h = self.encode(idx, attention_mask)
        if labels is None:
            return self.decoder(h), None
        # sparse prediction: gather the masked positions before the decoder
        pos = self.masked_positions(labels)
        logits = self.decoder(h.gather(1, pos[:, :, None].expand(-1, -1, h.size(-1))))
        return logits, MaskedLMLoss.apply(logits.view(-1, logits.size(-1)), labels.gather(1, pos).view(-1))

    def masked_positions(self, labels):
        """(B, k) indices of the masked positions, in increasing order; labels.gather(1, pos) are the targets
        of the sparse logits. A fixed k per row keeps shapes static for torch.compile; a row with fewer masks
        gathers -100 slots that the loss ignores."""
        k = round(self.config.mask_fraction * labels.size(1))
        return labels.ne(-100).to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :k]

    def flops_per_token(self):
        # forward + backward = 3 x forward, and a matmul with N weights costs 2N FLOPs per token forward:
        #   6 * (matmul weights in the blocks)                 the dense layers
        # + 12 * n_layer * block_size * n_embd                 attention scores q@k and probs@v
        # + 6 * mask_fraction * n_embd * vocab_size            the sparse decoder: masked tokens only
        # Embedding lookups, norms and the skipped 75% of the decoder are not counted.
        c = self.config
        dense = sum(m.weight.numel() for m in self.blocks.modules() if isinstance(m, nn.Linear))
        return 6 * dense + 12 * c.n_layer * c.block_size * c.n_embd + 6 * c.mask_fraction * c.n_embd * c.vocab_size

    def estimate_mfu(self, tokens_per_sec, peak_flops):
        return self.flops_per_token() * tokens_per_sec / peak_flops


class BertForSequenceClassification(CramModule):
    """GLUE: the encoder, [CLS] pooling -> Linear(n_embd, 1024) -> tanh -> dropout -> Linear(1024, num_labels).
    num_labels == 1 is regression (STS-B) with MSE; otherwise cross-entropy."""

    def __init__(self, config, num_labels):
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.bert = Bert(config)
        self.pooler = nn.Linear(config.n_embd, 1024)
        self.drop = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(1024, num_labels)
        self.pooler.apply(self._init_weights)
        self.classifier.apply(self._init_weights)

    def load_pretrained(self, state_dict):
        missing, unexpected = self.bert.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            print(f"load_pretrained: missing keys {missing}, unexpected keys {unexpected}")
        return missing, unexpected

    def forward(self, idx, attention_mask=None, labels=None):
        h = self.bert.encode(idx, attention_mask)[:, 0]
        logits = self.classifier(self.drop(torch.tanh(self.pooler(h))))
        if labels is None:
            return logits, None
        if self.num_labels == 1:
            return logits, F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return logits, F.cross_entropy(logits.float(), labels)


# -----------------------------------------------------------------------------
# the recipe's clock-driven pieces, masking and the training step, shared by train.py and bench.py

def learning_rate_at(p, schedule, peak, warmup_fraction=0.1, cooldown_fraction=0.2):
    """Learning rate at progress p in [0, 1] (the fraction of the budget spent)."""
    if schedule == "triangle":  # the paper's one-cycle: a quarter of the peak -> peak at p=0.75 -> 0
        return peak * max(0.0, min(0.25 + p, 4 * (1 - p)))
    if schedule == "trapezoid":  # linear warmup, flat, linear decay to 0
        return peak * max(0.0, min(1.0, p / warmup_fraction, (1 - p) / cooldown_fraction))
    if schedule == "cosine":  # linear warmup, then cosine decay to 0
        if p < warmup_fraction:
            return peak * p / warmup_fraction
        return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (p - warmup_fraction) / (1 - warmup_fraction))))
    raise CramError(f"--schedule={schedule}: unknown; use triangle, trapezoid or cosine")


def batch_size_at(p, batch_size, unit, batch_ramp):
    """Sequences per optimizer step at progress p: a linear ramp from one micro step (unit = micro batch x
    ranks) to batch_size over the first batch_ramp of the budget, in whole micro steps."""
    target = batch_size if batch_ramp <= 0 else unit + (batch_size - unit) * min(1.0, p / batch_ramp)
    return max(unit, round(target / unit) * unit)


def mask_tokens(idx, mask_fraction, mask_id, n_bpe, generator):
    """BERT's corruption with exactly k = round(mask_fraction * T) positions per sequence: of those, 80% become
    [MASK], 10% a random BPE token, 10% stay. Runs on idx's device. Special tokens (ids >= n_bpe) are
    chosen last, so [SEP] is only masked in a row with almost nothing else."""
    B, T = idx.shape
    k = round(mask_fraction * T)
    scores = torch.rand(B, T, generator=generator, device=idx.device)
    scores.masked_fill_(idx >= n_bpe, 2.0)
    pos = scores.argsort(dim=1)[:, :k]
    original = idx.gather(1, pos)
    labels = torch.full_like(idx, -100).scatter_(1, pos, original)
    r = torch.rand(B, k, generator=generator, device=idx.device)
    random_ids = torch.randint(0, n_bpe, (B, k), generator=generator, device=idx.device)
    new = torch.where(r < 0.8, torch.full_like(original, mask_id), torch.where(r < 0.9, random_ids, original))
    return idx.scatter(1, pos, new), labels


def train_step(model, optimizer, scaler, next_batch, accum_steps, amp_ctx, grad_clip):
    """One optimizer step over accum_steps micro batches from next_batch() -> (inputs, labels).
    Returns (mean loss, skipped) as device tensors: nothing here waits for the device."""
    loss_sum = 0.0
    for micro in range(accum_steps):
        inputs, labels = next_batch()
        # under DDP, all-reduce the gradients only on the last micro step
        last = micro == accum_steps - 1
        with (nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()):
            with amp_ctx:
                _, loss = model(inputs, labels)
            scaler.scale(loss / accum_steps).backward()
        loss_sum = loss_sum + loss.detach()
    scaler.unscale_(optimizer)
    # grad_clip 0 means no clipping; the norm is computed either way, for the non-finite check
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    skipped = (~torch.isfinite(grad_norm)).float()
    if not scaler.is_enabled():  # fp16's GradScaler does the same itself
        if optimizer.defaults.get("fused"):
            optimizer.found_inf = skipped  # fused AdamW then leaves weights and state untouched, no sync
        elif skipped.item():  # other optimizers: the one sync, on devices without a fused AdamW
            optimizer.zero_grad(set_to_none=True)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum / accum_steps, skipped


# -----------------------------------------------------------------------------
# devices, precision and peak FLOP/s

def pick_device(device="auto"):
    """(device, device_type): 'auto' picks cuda, then mps, then cpu; 'cuda:1' is of type 'cuda', and every
    'if cuda' in the scripts (compile, fused AdamW, synchronize before timing) must test the type."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        device_type = torch.device(device).type
    except RuntimeError:
        raise CramError(f"--device={device}: use auto, cpu, cuda, cuda:N or mps")
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if device_type in available and not available[device_type]():
        raise CramError(f"--device={device}: this torch ({torch.__version__}) sees no {device_type} device; "
                        f"use --device=auto or cpu")
    if device_type == "cpu":
        keep_freed_host_memory()
    return device, device_type


def wants_compile(compile, device_type):
    """--compile: True, False, or None for on with CUDA and off elsewhere (on a CPU it gained nothing
    measurable and its compile time would eat a short budget)."""
    require_one_of("compile", compile, (None, True, False))  # --compile=false would be a truthy string
    return device_type == "cuda" if compile is None else compile


def to_device(x, device):
    """A host batch onto the device; on CUDA through pinned memory without blocking, so the copy queues
    behind the running step instead of waiting for it (a plain .to() from pageable memory syncs)."""
    return x.pin_memory().to(device, non_blocking=True) if torch.device(device).type == "cuda" else x.to(device)


def is_out_of_memory(error):
    """A CUDA OOM as it may arrive: itself, or wrapped by torch.compile (BackendCompilerFailed keeps it in
    .inner_exception, Triton re-raises it as a RuntimeError quoting it). Not Triton's 'out of resource:
    shared memory', which is a kernel config, not a full device."""
    for _ in range(8):  # a short chain; never loop on a cycle
        if error is None:
            return False
        if isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower():
            return True
        error = getattr(error, "inner_exception", None) or error.__cause__ or error.__context__
    return False


def keep_freed_host_memory():
    """glibc returns every allocation over 32 MB (the 100 MB of MLM logits, the 51 MB embedding gradient) to
    the OS on free, so each step page-faults them in again: ~17% of a 4 x 256 CPU step. Keep them; the cost
    is that resident memory stays at its peak (1.1 GB instead of 0.7 GB for that step)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: serve large blocks from the heap, not fresh mmaps
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: and don't hand the heap's top back either
    except (OSError, AttributeError):  # not glibc (musl, ...): keep its defaults
        pass


def _matmul_flops(device, dtype, n, reps=10):
    # its own generator: drawing from the global one would shift a resumed run's dropout masks
    g = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=dtype, generator=g) for _ in range(2))
    best = float("inf")
    for _ in range(reps + 1):  # the first is a warm-up; the best of 10, as one slow rep on a shared CPU read 57%
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def autocast_dtype(device, dtype="auto"):
    """bf16 on GPUs that have it, fp16 (with a GradScaler) on older CUDA GPUs; on CPU bf16 only where the
    CPU has bf16 matrix units: without them a bf16 matmul runs ~250x slower than fp32, so measure."""
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise CramError(f"--dtype={dtype}: use auto, float32, bfloat16 or float16")
    cpu_speedup = lambda low: _matmul_flops("cpu", low, 256, 1) / _matmul_flops("cpu", torch.float32, 256, 1)
    if dtype == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device == "cpu" and cpu_speedup(torch.bfloat16) > 0.8 else torch.float32
    chosen = getattr(torch, dtype)
    if device == "cpu" and chosen != torch.float32 and (speedup := cpu_speedup(chosen)) < 0.25:
        # asked for by name: say why it would crawl (float16 here: 3 against 140 GFLOP/s)
        raise CramError(f"--dtype={dtype}: this CPU runs {dtype} matmuls {1 / speedup:.0f}x slower than float32 "
                        f"(no {dtype} matrix units); use --dtype=auto or float32")
    return chosen


def amp_context(device, dtype):
    return nullcontext() if dtype == torch.float32 else torch.autocast(device_type=device, dtype=dtype)


def grad_scaler(device, dtype):
    return torch.amp.GradScaler(device, enabled=dtype == torch.float16)  # fp16 needs loss scaling, bf16 does not


# dense (no sparsity) tensor-core bf16/fp16 FLOP/s with fp32 accumulation, from the vendors' data sheets
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200 NVL": 835e12, "H200": 989e12,
              "A100": 312e12, "A6000": 154.8e12, "RTX 4090": 165.2e12, "3090": 71e12, "2080 Ti": 53.8e12,
              "A4000": 76.7e12, "T4": 65e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12, "A10G": 70e12,
              "V100": 125e12}


def peak_flops(device, dtype):
    """The device's peak FLOP/s: the table for known GPUs, else measured with a large matmul (always on CPU)."""
    if device == "cuda" and dtype != torch.float32:
        name = torch.cuda.get_device_name()
        for key in sorted(PEAK_FLOPS, key=len, reverse=True):  # longest first: 'L40S' before 'L40' before 'L4'
            if key in name:
                return PEAK_FLOPS[key], f"{name} (spec sheet)"
    n = 8192 if device == "cuda" else 2048
    return _matmul_flops(device, dtype, n), f"{device} {str(dtype).split('.')[-1]} (measured {n}x{n} matmul)"


# -----------------------------------------------------------------------------
# the one checkpoint format

CKPT_FORMAT = "cram-ckpt-v1"
CKPT_KEYS = ("model", "model_args", "meta", "step", "tokens_seen")


def save_checkpoint(path, ckpt):
    """Write atomically: a kill mid-write leaves the previous checkpoint intact. Refuses non-finite weights."""
    bad = [k for k, v in ckpt["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CramError(f"refusing to write {path}: non-finite weights in {bad[:3]}; lower learning_rate or check the data")
    tmp = path + ".tmp"
    torch.save({"format": CKPT_FORMAT, **ckpt}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device="cpu"):
    if not os.path.isfile(path):
        raise CramError(f"{path}: no such checkpoint; train one with train.py, or give the right path")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)  # never unpickles code
    except Exception as e:
        raise CramError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}); it is corrupt, truncated or not ours")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT or any(k not in ckpt for k in CKPT_KEYS):
        raise CramError(f"{path}: not a cram checkpoint (format {CKPT_FORMAT} with keys {', '.join(CKPT_KEYS)})")
    return ckpt
