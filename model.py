"""
The crammed BERT of Geiping & Goldstein, "Cramming: Training a Language Model on a Single GPU in
One Day" (arXiv 2212.14034), final recipe: the network, its masking, optimizer groups and FLOPs.

The tweaks that make it cram, each a BertConfig switch (crammed default; BERT's value in brackets):
no biases in Linear layers [bias=True]; pre-LayerNorm with a final LayerNorm, stable at a high peak
learning rate [norm_scheme="post"]; gated-GELU feed-forward [ffn="gelu"]; a fixed sinusoid times one
learnable scalar [positions="learned"]; no head transform or bias before the tied decoder
[head_transform=True, decoder_bias=True]; sparse prediction, only the masked positions reach the
50k-word decoder [sparse_prediction=False]; no dropout [dropout=0.1]. No token types in either. In
neither recipe: positions="alibi", "fixed_sinusoid". Every field is a --setting of train.py, bench.py.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class BertConfig:
    vocab_size: int = 50304  # the tokenizer's 50261 ids padded to a multiple of 64
    block_size: int = 128
    n_layer: int = 16
    n_head: int = 12
    n_embd: int = 768
    n_inner: int = 3072  # the FFN's hidden width (gated: half of it gates the other half)
    dropout: float = 0.0  # pretraining runs without dropout; fine-tuning uses 0.1
    mask_fraction: float = 0.25  # of each block: 80% [MASK], 10% random, 10% kept
    bias: bool = False  # biases in the blocks' (and the head transform's) Linear layers
    norm_scheme: str = "pre"  # pre | post
    ffn: str = "gated"  # gated | gelu
    positions: str = "sinusoid"  # sinusoid | fixed_sinusoid (its scale not learned) | learned | alibi
    head_transform: bool = False
    decoder_bias: bool = False  # a bias per word: a home for token frequencies
    sparse_prediction: bool = True  # False: logits at every position, the loss at the masked ones
    norm_eps: float = 1e-12

    def __post_init__(self):
        # the scripts name their settings like these fields, so the messages name the --setting
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_inner"):
            if getattr(self, key) < 1:
                raise ValueError(f"--{key}={getattr(self, key)}: must be at least 1")
        if self.n_embd % self.n_head:
            raise ValueError(f"--n_embd={self.n_embd} is not a multiple of --n_head={self.n_head}: "
                             f"every head gets n_embd / n_head dims")
        for key, choices in (("norm_scheme", ("pre", "post")), ("ffn", ("gated", "gelu")),
                             ("positions", ("sinusoid", "fixed_sinusoid", "learned", "alibi"))):
            if getattr(self, key) not in choices:
                raise ValueError(f"--{key}={getattr(self, key)}: choose {' or '.join(choices)}")
        if self.ffn == "gated" and self.n_inner % 2:
            raise ValueError(f"--n_inner={self.n_inner} must be even with --ffn=gated")
        masked = masked_count(self.mask_fraction, self.block_size)
        if not 0 < masked <= self.block_size:
            raise ValueError(f"--mask_fraction={self.mask_fraction} masks {masked} of "
                             f"{self.block_size} positions per block: choose one in (0, 1], "
                             f"the paper uses 0.25")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout={self.dropout}: must be in [0, 1)")


def masked_count(fraction, length):  # exact, whatever the text: static sparse decoder shapes
    return round(fraction * length)


def sinusoid(n_pos, dim):
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float) / dim)
    angles = torch.arange(n_pos, dtype=torch.float)[:, None] * inv_freq[None, :]
    # an odd width drops the last cosine
    return torch.cat([angles.sin(), angles.cos()], dim=1)[:, :dim]


class Embedding(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.positions = config.positions
        if self.positions == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        elif self.positions in ("sinusoid", "fixed_sinusoid"):
            # non-persistent: recomputed, so no parameter and no checkpoint key
            pos = sinusoid(config.block_size, config.n_embd)
            self.register_buffer("pos", pos, persistent=False)
            # Adam moves a scalar ~lr a step however small its gradient: on the unigram plateau the
            # learned scale falls to ~0 (0.0625 -> 0.0036 by 3.6M tokens, CPU preset), the plateau lasts
            self.pos_scale = nn.Parameter(torch.tensor(config.n_embd ** -0.5),
                                          requires_grad=self.positions == "sinusoid")
        self.ln = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, idx):
        x, T = self.wte(idx), idx.size(1)
        if self.positions == "learned":
            x = x + self.wpe.weight[:T]
        elif self.positions in ("sinusoid", "fixed_sinusoid"):
            x = x + self.pos_scale * self.pos[:T]
        return self.drop(self.ln(x))  # alibi: positions enter as Bert.alibi, in attention


class SelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        # one fused matmul for q, k and v
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, attn_mask=None):
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        # bidirectional; with no mask (pretraining: full blocks) SDPA takes the flash kernel on GPU;
        # alibi's float mask takes the memory-efficient one, and must have autocast's dtype as q has
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class FFN(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gated = config.ffn == "gated"
        self.fc = nn.Linear(config.n_embd, config.n_inner, bias=config.bias)
        self.proj = nn.Linear(config.n_inner // (1 + self.gated), config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x):
        if self.gated:
            x, gate = self.fc(x).chunk(2, dim=-1)
            return self.drop(self.proj(F.gelu(gate) * x))
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.ffn = FFN(config)
        self.post_norm = config.norm_scheme == "post"

    def forward(self, x, attn_mask=None):
        if self.post_norm:  # BERT: each residual sum is normalized, so no final norm is needed
            x = self.ln1(x + self.attn(x, attn_mask))
            return self.ln2(x + self.ffn(x))
        x = x + self.attn(self.ln1(x), attn_mask)
        return x + self.ffn(self.ln2(x))


def init_weights(module):
    # normal(0, 0.02) for every Linear and embedding weight, as in BERT and the paper
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def configure_optimizer(model, weight_decay, learning_rate, betas, eps, device_type):
    """AdamW that decays matrices and embeddings, not LayerNorm weights, biases or the position
    scale (all < 2-D)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # fused AdamW: one kernel for all parameters (CUDA and CPU), and it skips a step with
    # non-finite gradients without a host sync (see runtime.train_step)
    fused = device_type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=fused)


class MaskedLMLoss(torch.autograd.Function):
    """F.cross_entropy(logits, targets, ignore_index=-100), value and gradient, in fewer passes over
    the (masked positions x vocabulary) logits, on CPU the largest tensor of a step: the forward
    keeps one fused softmax and the backward turns it into the gradient (p - onehot) / n in place,
    where log_softmax, a zeroed one-hot gradient and log_softmax's backward would each sweep it."""

    @staticmethod
    def forward(ctx, logits, targets):
        valid = targets.ne(-100)
        t = targets.clamp(min=0)[:, None]
        probs = torch.softmax(logits.float(), dim=-1)
        n = valid.sum().clamp(min=1)
        # -log p: a p under float32's smallest normal (a target 87 nats below the rest) reads as
        # 87.3, not inf
        p_target = probs.gather(1, t).squeeze(1).clamp_min(torch.finfo(probs.dtype).tiny)
        ctx.save_for_backward(probs, t, valid, n)
        ctx.logits_dtype = logits.dtype
        return (-p_target.log() * valid).sum() / n

    @staticmethod
    def backward(ctx, grad_loss):
        probs, t, valid, n = ctx.saved_tensors
        scale = (grad_loss / n * valid)[:, None].to(probs.dtype)
        # in place: probs is not needed again (its version check refuses a second backward)
        grad = probs.mul_(scale).scatter_add_(1, t, -scale)
        return grad.to(ctx.logits_dtype), None


class Bert(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed = Embedding(config)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        pre = config.norm_scheme == "pre"
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.norm_eps) if pre else nn.Identity()
        self.head = nn.Identity()
        if config.head_transform:
            self.head = nn.Sequential(nn.Linear(config.n_embd, config.n_embd, bias=config.bias),
                                      nn.GELU(), nn.LayerNorm(config.n_embd, eps=config.norm_eps))
        # the MLM decoder's weight is the token embedding
        self.decoder = nn.Linear(config.n_embd, config.vocab_size, bias=config.decoder_bias)
        self.decoder.weight = self.embed.wte.weight
        # the ids the decoder may predict: train.py clears those train.bin never has, so the softmax
        # gives their rows no gradient (it would push every such row the same way: they collapse)
        self.register_buffer("decodable", torch.ones(config.vocab_size, dtype=torch.bool))
        if config.positions == "alibi":  # -slope_h |i - j| on head h's scores, as MosaicBERT
            dist = torch.arange(config.block_size)
            slopes = 2.0 ** (-8.0 * torch.arange(1, config.n_head + 1) / config.n_head)
            alibi = -slopes[:, None, None] * (dist - dist[:, None]).abs()
            self.register_buffer("alibi", alibi, persistent=False)
        self.apply(init_weights)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def encode(self, idx, attention_mask=None):
        # attention_mask (B, T): True/1 for real tokens; padded keys are hidden from every query
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        if self.config.positions == "alibi":  # (H, T, T), or (B, H, T, T) with padded keys at -inf
            bias = self.alibi[:, :idx.size(1), :idx.size(1)]
            mask = bias if mask is None else bias.masked_fill(~mask, -math.inf)
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)

    def decode(self, h):
        # -inf for the ids that are not decodable, through the matmul's bias: the GEMM adds it as it
        # writes (a masked_fill after it would be one more pass over the positions x 50k logits)
        bias = torch.zeros(self.decodable.shape, device=h.device)
        bias = bias.masked_fill(~self.decodable, -math.inf)
        if self.decoder.bias is not None:
            bias = bias + self.decoder.bias
        return F.linear(self.head(h), self.decoder.weight, bias)

    def forward(self, idx, attention_mask=None, labels=None, n_masked=None):
        """labels: original ids at the masked positions, -100 elsewhere; n_masked of them per row
        (default: masked_count of the length, as mask_tokens makes). Sparse: decodes only those."""
        h = self.encode(idx, attention_mask)
        if labels is None:
            return self.decode(h), None
        if self.config.sparse_prediction:  # gather the masked positions before the decoder
            pos = self.masked_positions(labels, n_masked)
            h = h.gather(1, pos[:, :, None].expand(-1, -1, h.size(-1)))
            labels = labels.gather(1, pos)
        logits = self.decode(h)
        return logits, MaskedLMLoss.apply(logits.view(-1, logits.size(-1)), labels.reshape(-1))

    def masked_positions(self, labels, n_masked=None):
        """(B, k) indices of the masked positions, increasing; labels.gather(1, pos) are the sparse
        logits' targets. A fixed k keeps shapes static; a row with fewer gathers ignored -100s."""
        k = masked_count(self.config.mask_fraction, labels.size(1)) if n_masked is None else n_masked
        is_masked = labels.ne(-100).to(torch.uint8)
        return is_masked.argsort(dim=1, descending=True, stable=True)[:, :k]

    def flops_per_token(self):
        # forward + backward = 3 x forward, and a matmul with N weights costs 2N FLOPs per token:
        #   6 * (matmul weights in the blocks)              the dense layers
        # + 12 * n_layer * block_size * n_embd              attention scores q@k and probs@v
        # + 6 * predicted * n_embd * vocab_size            the decoder (+ n_embd^2: head transform)
        #   predicted: the masked fraction if sparse prediction, else 1; lookups, norms not counted
        cfg = self.config
        dense = sum(m.weight.numel() for m in self.blocks.modules() if isinstance(m, nn.Linear))
        attention = 12 * cfg.n_layer * cfg.block_size * cfg.n_embd
        predicted = cfg.mask_fraction if cfg.sparse_prediction else 1.0
        head = cfg.n_embd * (cfg.vocab_size + cfg.n_embd * cfg.head_transform)
        return 6 * dense + attention + 6 * predicted * head


class BertForSequenceClassification(nn.Module):
    """GLUE: the encoder, [CLS] -> Linear(n_embd, 1024) -> tanh -> dropout -> Linear(1024,
    num_labels); num_labels == 1 is regression (STS-B) with MSE, otherwise cross-entropy."""

    def __init__(self, config, num_labels):
        super().__init__()
        self.num_labels = num_labels
        self.bert = Bert(config)
        self.pooler = nn.Linear(config.n_embd, 1024)
        self.drop = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(1024, num_labels)
        self.pooler.apply(init_weights)
        self.classifier.apply(init_weights)

    def forward(self, idx, attention_mask=None, labels=None):
        h = self.bert.encode(idx, attention_mask)[:, 0]
        logits = self.classifier(self.drop(torch.tanh(self.pooler(h))))
        if labels is None:
            return logits, None
        if self.num_labels == 1:
            return logits, F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return logits, F.cross_entropy(logits.float(), labels)


def mask_tokens(idx, mask_fraction, mask_id, n_bpe, generator, random_pool=None):
    """BERT's corruption with exactly k = round(mask_fraction * T) positions per sequence (the
    sparse decoder's fixed shape): of those, 80% become [MASK], 10% a random BPE token, 10% stay.
    The random tokens are uniform over random_pool (a 1-D tensor of ids) when given: train.py passes
    the ids its corpus has, so a never-seen row is not trained as an input either. Runs on idx's
    device. Special tokens (ids >= n_bpe) are chosen last: [SEP] is masked only in a row with
    little else."""
    B, T = idx.shape
    k = masked_count(mask_fraction, T)
    scores = torch.rand(B, T, generator=generator, device=idx.device)
    scores.masked_fill_(idx >= n_bpe, 2.0)
    pos = scores.argsort(dim=1)[:, :k]
    original = idx.gather(1, pos)
    labels = torch.full_like(idx, -100).scatter_(1, pos, original)
    r = torch.rand(B, k, generator=generator, device=idx.device)
    if random_pool is None:
        random_ids = torch.randint(0, n_bpe, (B, k), generator=generator, device=idx.device)
    else:
        which = torch.randint(0, len(random_pool), (B, k), generator=generator, device=idx.device)
        random_ids = random_pool[which]
    masked = torch.full_like(original, mask_id)
    new = torch.where(r < 0.8, masked, torch.where(r < 0.9, random_ids, original))
    return idx.scatter(1, pos, new), labels
