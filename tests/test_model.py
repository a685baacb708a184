"""The crammed BERT (model.py: its size, sparse loss, padding, tying, gradients, optimizer groups, FLOPs, masking)
and what the scripts share (runtime.py: checkpoints, devices, precision, peak FLOP/s, the training step)."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

import runtime
from configurator import CramError
from model import (Bert, BertConfig, BertForSequenceClassification, MaskedLMLoss, configure_optimizer, mask_tokens,
                   masked_count)
from runtime import (autocast_dtype, bert_config, is_out_of_memory, load_checkpoint, load_weights, peak_flops,
                     pick_device, save_checkpoint)

TINY = dict(vocab_size=320, block_size=32, n_layer=2, n_head=2, n_embd=32, n_inner=64)
# the original BERT's switches (config/bert_original.py); each alone is one of the paper's ablations
BERT = dict(bias=True, norm_scheme="post", ffn="gelu", positions="learned", head_transform=True, decoder_bias=True,
            sparse_prediction=False, dropout=0.1, mask_fraction=0.15)
IZSAK = dict(BERT, norm_scheme="pre", sparse_prediction=True, decoder_bias=False)
N_BPE, MASK_ID = 300, 302  # tiny vocabulary: ids >= 300 are specials, as in prepare.Tokenizer


def tiny_batch(B=4, T=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, N_BPE, (B, T), generator=g)
    return mask_tokens(idx, 0.25, MASK_ID, N_BPE, g)


def test_default_config_has_the_papers_parameter_count():
    with torch.device("meta"):
        assert Bert(BertConfig()).num_params() == 133_057_537
        # the paper's 119,589,889 with its 32,768-word vocabulary: the difference is our embedding
        assert Bert(BertConfig(vocab_size=32768)).num_params() == 119_589_889


def test_original_bert_has_the_parameter_count_derived_by_hand():
    C, V, T, L, inner = 768, 50304, 128, 16, 3072
    block = (C * 3 * C + 3 * C) + (C * C + C) + (C * inner + inner) + (inner * C + C) + 2 * (2 * C)  # biases, 2 LNs
    embeddings = V * C + T * C + 2 * C  # words, learned positions, LayerNorm
    head = (C * C + C) + 2 * C + V  # the transform's dense and LayerNorm, the decoder's bias (its weight is tied)
    assert L * block + embeddings + head == 152_781_696  # no final LayerNorm after post-LN blocks
    with torch.device("meta"):
        assert Bert(BertConfig(**BERT)).num_params() == 152_781_696
        # BERT-base's shape: HF's BertForMaskedLM has 109,514,298, which adds a 2 x 768 token-type table
        base = BertConfig(**BERT, n_layer=12, vocab_size=30522, block_size=512)
        assert Bert(base).num_params() + 2 * 768 == 109_514_298


@pytest.mark.parametrize("bad, message", [
    (dict(n_embd=32, n_head=3), "--n_embd=32 is not a multiple of --n_head=3"),
    (dict(n_inner=63), "--n_inner=63 must be even with --ffn=gated"),
    (dict(ffn="relu"), "--ffn=relu: choose gated or gelu"),
    (dict(norm_scheme="sandwich"), "--norm_scheme=sandwich: choose pre or post"),
    (dict(positions="rotary"), "--positions=rotary: choose sinusoid or fixed_sinusoid or learned or alibi"),
    (dict(n_layer=0), "--n_layer=0: must be at least 1"),
    (dict(mask_fraction=0.01), "--mask_fraction=0.01 masks 0 of 32 positions"),
    (dict(dropout=1.0), "--dropout=1.0: must be in [0, 1)"),
])
def test_config_refuses_a_bad_shape_naming_the_setting(bad, message):
    with pytest.raises(ValueError) as e:  # an ordinary exception: a notebook catches it
        BertConfig(**{**TINY, **bad})
    assert str(e.value).startswith(message)
    with pytest.raises(CramError) as e:  # the scripts' one-line error, same words
        bert_config(**{**TINY, **bad})
    assert str(e.value).startswith(message)


def test_odd_widths_and_head_sizes_train():
    # widths a new user may try: odd (the sinusoid has one more sine than cosine), head sizes 15 and 48
    for n_embd, n_head in ((45, 3), (63, 1), (96, 2)):
        model = Bert(BertConfig(**{**TINY, "n_embd": n_embd, "n_head": n_head}))
        idx, labels = tiny_batch()
        _, loss = model(idx, labels=labels)
        loss.backward()
        assert torch.isfinite(loss) and model.embed.wte.weight.grad is not None


def test_output_shapes_full_and_sparse():
    model = Bert(BertConfig(**TINY))
    x, y = tiny_batch()
    logits, loss = model(x)
    assert logits.shape == (4, 32, 320) and loss is None
    logits, loss = model(x, labels=y)
    assert logits.shape == (4, 8, 320) and loss.ndim == 0


def test_sparse_loss_equals_full_cross_entropy_at_masked_positions():
    model = Bert(BertConfig(**TINY))
    x, y = tiny_batch()
    full, _ = model(x)
    _, sparse_loss = model(x, labels=y)
    reference = F.cross_entropy(full.view(-1, 320), y.view(-1), ignore_index=-100)
    torch.testing.assert_close(sparse_loss, reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_lm_loss_matches_cross_entropy_in_value_and_gradient(dtype):
    torch.manual_seed(0)
    logits = (torch.randn(64, 320) * 4).to(dtype)
    targets = torch.randint(0, 320, (64,))
    targets[::5] = -100  # slots of rows with fewer masks
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours, ref = MaskedLMLoss.apply(a, targets), F.cross_entropy(b.float(), targets, ignore_index=-100)
    (3.0 * ours).backward()
    (3.0 * ref).backward()
    torch.testing.assert_close(ours, ref)
    assert a.grad.dtype == dtype
    torch.testing.assert_close(a.grad, b.grad)
    assert (a.grad[::5] == 0).all()
    loss = MaskedLMLoss.apply(logits.clone().requires_grad_(), targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()  # the softmax became the gradient in place: a second pass must not reuse it silently


def test_rows_with_fewer_masks_are_ignored_not_counted():
    model = Bert(BertConfig(**TINY))
    x, y = tiny_batch()
    y[0, y[0] != -100] = -100
    y[0, 3] = x[0, 3]  # row 0 has a single masked position
    full, _ = model(x)
    torch.testing.assert_close(model(x, labels=y)[1], F.cross_entropy(full.view(-1, 320), y.view(-1), ignore_index=-100))


@pytest.mark.parametrize("positions", ["sinusoid", "alibi"])
def test_padding_with_mask_leaves_real_token_outputs_unchanged(positions):
    model = Bert(BertConfig(**TINY, positions=positions)).eval()
    idx = torch.randint(0, N_BPE, (2, 10))
    padded = torch.cat([idx, torch.full((2, 6), 303)], dim=1)
    mask = torch.cat([torch.ones(2, 10), torch.zeros(2, 6)], dim=1)
    torch.testing.assert_close(model.encode(padded, mask)[:, :10], model.encode(idx), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(model.encode(padded)[:, :10], model.encode(idx), atol=1e-5)  # the mask matters


def test_fixed_sinusoid_keeps_its_scale_where_the_learned_one_moves_and_shares_its_checkpoint_keys():
    scales, models = {}, {}
    for positions in ("sinusoid", "fixed_sinusoid"):
        torch.manual_seed(0)
        model = models[positions] = Bert(BertConfig(**TINY, positions=positions))
        optimizer = configure_optimizer(model, 0.01, 1e-2, (0.9, 0.98), 1e-6, "cpu")
        for seed in range(3):
            x, y = tiny_batch(seed=seed)
            model(x, labels=y)[1].backward()
            optimizer.step()
            optimizer.zero_grad()
        scales[positions] = model.embed.pos_scale.item()
    init = torch.tensor(32 ** -0.5).item()
    assert scales["fixed_sinusoid"] == init and abs(scales["sinusoid"] - init) > 1e-3
    # one checkpoint format: either variant loads the other's weights, its scale included
    models["fixed_sinusoid"].load_state_dict(models["sinusoid"].state_dict())
    assert models["fixed_sinusoid"].embed.pos_scale.item() == scales["sinusoid"]


def test_alibi_biases_scores_by_distance_and_knows_no_absolute_position():
    torch.manual_seed(0)
    model = Bert(BertConfig(**TINY, positions="alibi")).eval()
    # head h of H gets -|i - j| / 2^(8h/H): here slopes 1/16 and 1/256
    assert model.alibi[0, 3, 7] == -4 / 16 and model.alibi[1, 9, 1] == -8 / 256 and model.alibi[:, 5, 5].eq(0).all()
    attn, x = model.blocks[0].attn, torch.randn(1, 32, 32)
    with torch.no_grad():
        attn.qkv.weight[:64] = 0  # q = k = 0: the scores are the bias alone
        v = (x @ attn.qkv.weight[64:].T).view(1, 32, 2, 16).transpose(1, 2)
        expected = (torch.softmax(model.alibi, dim=-1) @ v).transpose(1, 2).reshape(1, 32, 32)
        torch.testing.assert_close(attn(x, model.alibi), attn.proj(expected))
    # only distances count: a sequence after 6 padded positions encodes as it does alone
    idx = torch.randint(0, N_BPE, (2, 10))
    shifted = torch.cat([torch.full((2, 6), 303), idx], dim=1)
    mask = torch.cat([torch.zeros(2, 6), torch.ones(2, 10)], dim=1)
    torch.testing.assert_close(model.encode(shifted, mask)[:, 6:], model.encode(idx), rtol=1e-5, atol=1e-5)
    sinusoid = Bert(BertConfig(**TINY)).eval()  # absolute positions: the same shift changes every output
    assert not torch.allclose(sinusoid.encode(shifted, mask)[:, 6:], sinusoid.encode(idx), atol=1e-3)


def test_decoder_is_tied_to_the_embedding():
    model = Bert(BertConfig(**TINY))
    assert model.decoder.weight is model.embed.wte.weight and model.decoder.bias is None
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_classifier_loads_pretraining_weights_without_missing_encoder_keys():
    pretrained = Bert(BertConfig(**TINY))
    clf = BertForSequenceClassification(BertConfig(**TINY, dropout=0.1), num_labels=3)
    load_weights(clf.bert, pretrained.state_dict(), "pretrained")  # as finetune_glue.py loads: strict
    torch.testing.assert_close(clf.bert.embed.wte.weight, pretrained.embed.wte.weight)
    logits, loss = clf(torch.randint(0, N_BPE, (4, 12)), torch.ones(4, 12), torch.tensor([0, 1, 2, 0]))
    assert logits.shape == (4, 3) and loss.ndim == 0
    reg = BertForSequenceClassification(BertConfig(**TINY), num_labels=1)
    logits, loss = reg(torch.randint(0, N_BPE, (4, 12)), labels=torch.tensor([0.5, 1.0, 4.0, 2.5]))
    assert logits.shape == (4, 1) and loss.ndim == 0


@pytest.mark.parametrize("switches", [{}, *({k: v} for k, v in BERT.items()), dict(positions="alibi"),
                                      dict(positions="fixed_sinusoid"), BERT, IZSAK],
                         ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "crammed")
def test_every_switch_trains_and_reaches_every_parameter(switches):
    torch.manual_seed(0)
    config = BertConfig(**TINY, **switches)
    model = Bert(config)
    x, y = tiny_batch()
    if config.mask_fraction != 0.25:
        x, y = mask_tokens(x, config.mask_fraction, MASK_ID, N_BPE, torch.Generator().manual_seed(1))
    logits, loss = model(x, labels=y)
    predicted = masked_count(config.mask_fraction, config.block_size) if config.sparse_prediction else 32
    assert logits.shape == (4, predicted, 320)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == p.requires_grad, name
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == (
        ["embed.pos_scale"] if config.positions == "fixed_sinusoid" else [])
    # each switch changed what it names
    block = model.blocks[0]
    assert hasattr(model.embed, "wpe") == (config.positions == "learned")
    assert (model.decoder.bias is not None) == config.decoder_bias
    assert (block.attn.qkv.bias is not None) == (block.ffn.proj.bias is not None) == config.bias
    assert isinstance(model.ln_f, torch.nn.LayerNorm) == (config.norm_scheme == "pre") == (not block.post_norm)
    assert block.ffn.proj.in_features == (64 if config.ffn == "gelu" else 32)
    assert isinstance(model.head, torch.nn.Sequential) == config.head_transform


def test_post_ln_normalizes_each_block_output_and_differs_from_pre_ln():
    torch.manual_seed(0)
    pre, post = Bert(BertConfig(**TINY)), Bert(BertConfig(**TINY, norm_scheme="post"))
    for p in pre.blocks.parameters():  # sublayers that add more than init's 0.02-sized residuals
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.2)
    missing, unexpected = post.load_state_dict(pre.state_dict(), strict=False)
    assert missing == [] and unexpected == ["ln_f.weight", "ln_f.bias"]  # post-LN has no final norm
    x, _ = tiny_batch()
    outputs = {}
    for name, model in (("pre", pre), ("post", post)):
        model.blocks[0].register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
        model.encode(x)
    # the LayerNorms are still init's identity affine: a post-LN block's output is standardized per position
    torch.testing.assert_close(outputs["post"].std(-1, unbiased=False), torch.ones(4, 32), atol=1e-3, rtol=0)
    assert (outputs["pre"].std(-1) - 1).abs().mean() > 0.1
    assert not torch.allclose(pre.encode(x), post.encode(x), atol=1e-2)
    # and each block is BERT's, written out: normalize after each residual sum
    b, h = post.blocks[1], outputs["post"]
    h = b.ln1(h + b.attn.proj(F.scaled_dot_product_attention(*b.attn.qkv(h).view(4, 32, 3, 2, 16).permute(2, 0, 3, 1, 4))
                             .transpose(1, 2).reshape(4, 32, 32)))
    h = b.ln2(h + b.ffn.proj(F.gelu(b.ffn.fc(h)[..., 32:]) * b.ffn.fc(h)[..., :32]))
    torch.testing.assert_close(post.encode(x), h)  # no final norm after post-LN blocks


def test_full_prediction_loss_equals_the_sparse_loss_on_the_same_masks():
    torch.manual_seed(0)
    sparse = Bert(BertConfig(**TINY, head_transform=True, decoder_bias=True))
    full = Bert(BertConfig(**TINY, head_transform=True, decoder_bias=True, sparse_prediction=False))
    full.load_state_dict(sparse.state_dict())
    torch.nn.init.normal_(full.decoder.bias)  # a bias that matters
    sparse.load_state_dict(full.state_dict())
    x, y = tiny_batch()
    sparse_logits, sparse_loss = sparse(x, labels=y)
    full_logits, full_loss = full(x, labels=y)
    torch.testing.assert_close(full_loss, sparse_loss)
    pos = sparse.masked_positions(y)
    torch.testing.assert_close(full_logits.gather(1, pos[:, :, None].expand(-1, -1, 320)), sparse_logits)
    # with n_masked the sparse model takes labels masked at another rate (train.py's fixed validation masks)
    g = torch.Generator().manual_seed(2)
    x, y = mask_tokens(x, 0.5, MASK_ID, N_BPE, g)
    logits, loss = sparse(x, labels=y, n_masked=16)
    torch.testing.assert_close(loss, full(x, labels=y)[1])
    assert logits.shape == (4, 16, 320)


def test_optimizer_groups_decay_matrices_only():
    model = Bert(BertConfig(**TINY))
    opt = configure_optimizer(model, 0.01, 1e-3, (0.9, 0.98), 1e-12, "cpu")
    decay, no_decay = opt.param_groups
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each parameter in exactly one group
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert any(p is model.embed.pos_scale for p in no_decay["params"])
    assert any(p is model.embed.wte.weight for p in decay["params"])
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-12


def test_flops_per_token_match_a_hand_computation():
    model = Bert(BertConfig(**TINY))
    C, L, T, V = 32, 2, 32, 320
    dense = L * (C * 3 * C + C * C + C * 64 + 32 * C)  # qkv, proj, fc (n_inner), proj (n_inner / 2)
    expected = 6 * dense + 12 * L * T * C + 6 * 0.25 * C * V
    assert model.flops_per_token() == pytest.approx(expected)
    # BERT's: a plain FFN (n_inner out and back), the head transform and the decoder at every position
    dense = L * (C * 3 * C + C * C + C * 64 + 64 * C)
    expected = 6 * dense + 12 * L * T * C + 6 * 1.0 * C * (V + C)
    assert Bert(BertConfig(**TINY, **BERT)).flops_per_token() == pytest.approx(expected)


def test_masking_is_exact_and_80_10_10():
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, N_BPE, (2000, 32), generator=g)
    idx[:, 0] = 301  # a special token: never chosen while there are ordinary ones
    x, y = mask_tokens(idx, 0.25, MASK_ID, N_BPE, g)
    masked = y != -100
    assert (masked.sum(1) == 8).all() and not masked[:, 0].any()
    assert torch.equal(y[masked], idx[masked]) and torch.equal(x[~masked], idx[~masked])
    n = masked.sum().item()
    became_mask = (x[masked] == MASK_ID).sum().item() / n
    kept = (x[masked] == idx[masked]).sum().item() / n
    assert abs(became_mask - 0.8) < 0.01
    assert abs(kept - (0.1 + 0.1 / N_BPE)) < 0.01  # a random token can equal the original
    assert (x[masked] < N_BPE).logical_or(x[masked] == MASK_ID).all()
    a = mask_tokens(idx, 0.25, MASK_ID, N_BPE, torch.Generator().manual_seed(7))
    b = mask_tokens(idx, 0.25, MASK_ID, N_BPE, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_checkpoint_round_trip_and_refusals(tmp_path):
    model = Bert(BertConfig(**TINY))
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint(path, {"model": model.state_dict(), "model_args": TINY, "meta": {}, "step": 3, "tokens_seen": 9})
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 3 and torch.equal(ckpt["model"]["embed.wte.weight"], model.embed.wte.weight)
    assert not os.path.exists(path + ".tmp")
    bad = model.state_dict()
    bad["ln_f.weight"] = bad["ln_f.weight"] * math.nan
    with pytest.raises(CramError, match="non-finite"):
        save_checkpoint(path, {"model": bad, "model_args": TINY, "meta": {}, "step": 4, "tokens_seen": 9})
    assert load_checkpoint(path)["step"] == 3  # the previous checkpoint survives
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(CramError, match="corrupt"):
        load_checkpoint(path)
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CramError, match="not a cram checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CramError, match="no such checkpoint"):
        load_checkpoint(str(tmp_path / "missing.pt"))


def test_device_type_of_an_indexed_device_and_a_bad_name(monkeypatch):
    if not torch.cuda.is_available():  # a CPU build must say so in one line, not assert deep inside torch
        with pytest.raises(CramError, match="--device=cuda:1: this torch .* sees no cuda device; use --device=auto"):
            pick_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    made_current = []
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    # every 'if cuda' (compile, fused AdamW, synchronize before timing) tests the type: cuda:1 must be 'cuda';
    # and cuda:1 becomes the current device, or synchronize() and the peak lookup would address GPU 0
    assert pick_device("cuda:1") == ("cuda:1", "cuda") and made_current == ["cuda:1"]
    assert pick_device("cuda") == ("cuda", "cuda") and made_current == ["cuda:1"]
    assert pick_device("cpu") == ("cpu", "cpu")
    with pytest.raises(CramError, match="--device=gpu: use auto, cpu, cuda, cuda:N or mps"):
        pick_device("gpu")


@pytest.mark.parametrize("name, expected", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                            ("NVIDIA H100 NVL", 835e12), ("NVIDIA H200", 989e12),
                                            ("NVIDIA L40S", 362e12), ("NVIDIA L40", 181e12), ("NVIDIA L4", 121e12),
                                            ("NVIDIA GeForce RTX 4090", 165.2e12), ("NVIDIA A100-SXM4-80GB", 312e12)])
def test_gpu_peak_comes_from_the_most_specific_table_entry(monkeypatch, name, expected):
    # MFU is only as right as its denominator: an H100 NVL read as an SXM H100 would under-report MFU by 16%
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: name)
    peak, source = peak_flops("cuda", torch.bfloat16)
    assert peak == expected and source == f"{name} (spec sheet)"


def test_out_of_memory_is_recognised_however_torch_compile_wraps_it():
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    wrapped = RuntimeError("backend='inductor' raised")  # BackendCompilerFailed keeps the OOM in .inner_exception
    wrapped.inner_exception = oom
    try:
        try:
            raise oom
        except torch.OutOfMemoryError as e:
            raise RuntimeError("compiled step failed") from e
    except RuntimeError as e:
        chained = e
    assert is_out_of_memory(oom) and is_out_of_memory(wrapped) and is_out_of_memory(chained)
    assert is_out_of_memory(RuntimeError("No valid triton configs. OutOfMemoryError: CUDA out of memory."))
    # Triton's shared-memory limit is a kernel config, not a full device: the search must not stop on it
    assert not is_out_of_memory(RuntimeError("No valid triton configs. OutOfResources: out of resource: shared memory"))
    assert not is_out_of_memory(ValueError("shapes do not match"))


def test_cpu_precision_follows_what_the_cpu_reports(monkeypatch):
    # a CPU without bf16 units runs a bf16 matmul ~250x slower than fp32: decided from its flags, not a timing
    flags = {"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": False, "_is_amx_fp16_supported": False}
    for name in flags:
        monkeypatch.setattr(torch.cpu, name, lambda name=name: flags[name])
    assert autocast_dtype("cpu", "auto") == torch.float32
    with pytest.raises(CramError, match="--dtype=float16: this CPU has no float16 matrix units"):
        autocast_dtype("cpu", "float16")  # asked for by name: refused in one line rather than crawling
    with pytest.raises(CramError, match="--dtype=bfloat16: this CPU has no bfloat16 matrix units"):
        autocast_dtype("cpu", "bfloat16")
    flags["_is_avx512_bf16_supported"] = True  # avx512_bf16, as on this project's machines
    assert autocast_dtype("cpu", "auto") == torch.bfloat16 and autocast_dtype("cpu", "bfloat16") == torch.bfloat16
    assert autocast_dtype("cpu", "float32") == torch.float32
    with pytest.raises(CramError, match="--dtype=fp16: use auto, float32, bfloat16 or float16"):
        autocast_dtype("cpu", "fp16")


@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                                  ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_cuda_precision_is_bf16_only_where_the_gpu_has_it_natively(monkeypatch, capability, expected):
    # a 2080 Ti (sm75) or V100 (sm70) can make bf16 tensors, but does its math without tensor cores:
    # fp16 with the GradScaler there
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kw: True)  # emulation counts as yes
    assert autocast_dtype("cuda", "auto") == expected
    assert runtime.grad_scaler("cpu", expected).is_enabled() == (expected == torch.float16)


def test_ids_left_out_of_the_decoder_get_no_probability_and_no_gradient():
    model = Bert(BertConfig(**TINY))
    decodable = torch.ones(320, dtype=torch.bool)
    decodable[torch.arange(0, 320, 3)] = False  # every third id never occurs in this 'corpus'
    decodable[MASK_ID] = False
    model.decodable.copy_(decodable)
    g = torch.Generator().manual_seed(0)
    pool = torch.nonzero(decodable[:N_BPE]).squeeze(1)
    idx = pool[torch.randint(0, len(pool), (4, 32), generator=g)]
    x, y = mask_tokens(idx, 0.25, MASK_ID, N_BPE, g, pool)
    assert decodable[x].logical_or(x == MASK_ID).all()  # random replacements come from the pool only
    _, loss = model(x, labels=y)
    # the loss is cross-entropy over the remaining ids alone
    h = model.encode(x)
    logits = h @ model.embed.wte.weight[decodable].T
    remapped = torch.cumsum(decodable.long(), 0)[y.clamp(min=0)] - 1
    reference = F.cross_entropy(logits.view(-1, int(decodable.sum())), remapped.masked_fill(y < 0, -100).view(-1))
    torch.testing.assert_close(loss, reference)
    loss.backward()
    grad = model.embed.wte.weight.grad
    never_seen = ~decodable
    never_seen[MASK_ID] = False  # [MASK] is never a target but is an input: its row learns as an input
    assert (grad[never_seen] == 0).all() and (grad[decodable].abs().sum(1) > 0).all()


def test_train_step_with_loss_scaling_skips_a_non_finite_step(monkeypatch):
    # fp16's path (older GPUs) on CPU: GradScaler unscales, finds the inf, skips the update and halves the scale
    torch.manual_seed(0)
    model = Bert(BertConfig(**TINY))
    optimizer = configure_optimizer(model, 0.01, 1e-3, (0.9, 0.98), 1e-12, "cpu")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    assert scaler.is_enabled()
    g = torch.Generator().manual_seed(0)
    batch = lambda: mask_tokens(torch.randint(0, N_BPE, (4, 32), generator=g), 0.25, MASK_ID, N_BPE, g)
    ctx = runtime.amp_context("cpu", torch.float32)
    loss, skipped = runtime.train_step(model, optimizer, scaler, batch, 2, ctx, 0.5)
    assert skipped.item() == 0 and torch.isfinite(loss) and scaler.get_scale() == 2.0**10
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state_before = optimizer.state_dict()["state"][0]["exp_avg"].clone()
    hook = model.ln_f.weight.register_hook(lambda grad: grad * math.inf)
    loss, skipped = runtime.train_step(model, optimizer, scaler, batch, 2, ctx, 0.5)
    hook.remove()
    assert skipped.item() == 1 and scaler.get_scale() == 2.0**9
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(optimizer.state_dict()["state"][0]["exp_avg"], state_before)
    assert all(p.grad is None for p in model.parameters())
    # a stop between micro batches drops the step: no update, no gradients left behind
    calls = iter([False, True])
    assert runtime.train_step(model, optimizer, scaler, batch, 2, ctx, 0.5, lambda: next(calls)) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
