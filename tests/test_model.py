"""The crammed BERT: its size, its sparse loss, padding, tying, gradients, optimizer groups, FLOPs, checkpoints."""
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import model
from configurator import CramError
from model import (Bert, BertConfig, BertForSequenceClassification, MaskedLMLoss, autocast_dtype, batch_size_at,
                   is_out_of_memory, learning_rate_at, load_checkpoint, mask_tokens, peak_flops, pick_device,
                   save_checkpoint)

TINY = dict(vocab_size=320, block_size=32, n_layer=2, n_head=2, n_embd=32, n_inner=64)
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


@pytest.mark.parametrize("bad, message", [
    (dict(n_embd=32, n_head=3), "--n_embd=32 is not a multiple of --n_head=3"),
    (dict(n_inner=63), "--n_inner=63 must be even"),
    (dict(n_layer=0), "--n_layer=0: must be at least 1"),
    (dict(mask_fraction=0.01), "--mask_fraction=0.01 masks 0 of 32 positions"),
    (dict(dropout=1.0), "--dropout=1.0: must be in [0, 1)"),
])
def test_config_refuses_a_bad_shape_naming_the_setting(bad, message):
    with pytest.raises(CramError) as e:
        BertConfig(**{**TINY, **bad})
    assert str(e.value).startswith(message)


def test_odd_widths_and_head_sizes_train():
    # widths a new user may try: odd (the sinusoid has one more sine than cosine), head sizes 15 and 48
    for n_embd, n_head in ((45, 3), (63, 1), (96, 2)):
        model = Bert(BertConfig(**{**TINY, "n_embd": n_embd, "n_head": n_head}))
        idx, labels = tiny_batch()
        _, loss = model(idx, labels)
        loss.backward()
        assert torch.isfinite(loss) and model.embed.wte.weight.grad is not None


def test_output_shapes_full_and_sparse():
    model = Bert(BertConfig(**TINY))
    x, y = tiny_batch()
    logits, loss = model(x)
    assert logits.shape == (4, 32, 320) and loss is None
    logits, loss = model(x, y)
    assert logits.shape == (4, 8, 320) and loss.ndim == 0


def test_sparse_loss_equals_full_cross_entropy_at_masked_positions():
    model = Bert(BertConfig(**TINY))
    x, y = tiny_batch()
    full, _ = model(x)
    _, sparse_loss = model(x, y)
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
    torch.testing.assert_close(model(x, y)[1], F.cross_entropy(full.view(-1, 320), y.view(-1), ignore_index=-100))


def test_padding_with_mask_leaves_real_token_outputs_unchanged():
    model = Bert(BertConfig(**TINY)).eval()
    idx = torch.randint(0, N_BPE, (2, 10))
    padded = torch.cat([idx, torch.full((2, 6), 303)], dim=1)
    mask = torch.cat([torch.ones(2, 10), torch.zeros(2, 6)], dim=1)
    torch.testing.assert_close(model.encode(padded, mask)[:, :10], model.encode(idx), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(model.encode(padded)[:, :10], model.encode(idx), atol=1e-5)  # the mask matters


def test_decoder_is_tied_to_the_embedding():
    model = Bert(BertConfig(**TINY))
    assert model.decoder.weight is model.embed.wte.weight and model.decoder.bias is None
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_classifier_loads_pretraining_weights_without_missing_encoder_keys():
    pretrained = Bert(BertConfig(**TINY))
    clf = BertForSequenceClassification(BertConfig(**TINY, dropout=0.1), num_labels=3)
    missing, unexpected = clf.load_pretrained(pretrained.state_dict())
    assert missing == [] and unexpected == []
    torch.testing.assert_close(clf.bert.embed.wte.weight, pretrained.embed.wte.weight)
    logits, loss = clf(torch.randint(0, N_BPE, (4, 12)), torch.ones(4, 12), torch.tensor([0, 1, 2, 0]))
    assert logits.shape == (4, 3) and loss.ndim == 0
    reg = BertForSequenceClassification(BertConfig(**TINY), num_labels=1)
    logits, loss = reg(torch.randint(0, N_BPE, (4, 12)), labels=torch.tensor([0.5, 1.0, 4.0, 2.5]))
    assert logits.shape == (4, 1) and loss.ndim == 0


def test_gradients_reach_every_parameter():
    model = Bert(BertConfig(**TINY))
    x, y = tiny_batch()
    model(x, y)[1].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_optimizer_groups_decay_matrices_only():
    model = Bert(BertConfig(**TINY))
    opt = model.configure_optimizers(0.01, 1e-3, (0.9, 0.98), 1e-12, "cpu")
    decay, no_decay = opt.param_groups
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each parameter in exactly one group
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert any(p is model.embed.pos_scale for p in no_decay["params"])
    assert any(p is model.embed.wte.weight for p in decay["params"])
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-12


def test_flops_and_mfu_match_a_hand_computation():
    model = Bert(BertConfig(**TINY))
    C, L, T, V = 32, 2, 32, 320
    dense = L * (C * 3 * C + C * C + C * 64 + 32 * C)  # qkv, proj, fc (n_inner), proj (n_inner / 2)
    expected = 6 * dense + 12 * L * T * C + 6 * 0.25 * C * V
    assert model.flops_per_token() == pytest.approx(expected)
    assert model.estimate_mfu(1000.0, 1e9) == pytest.approx(expected * 1000 / 1e9)


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


def test_triangle_schedule_and_batch_ramp():
    lr = lambda p: learning_rate_at(p, "triangle", 1e-3)
    assert lr(0) == pytest.approx(2.5e-4) and lr(0.5) == pytest.approx(7.5e-4)
    assert lr(0.75) == pytest.approx(1e-3) and lr(1.0) == 0.0 and lr(0.875) == pytest.approx(5e-4)
    assert learning_rate_at(0.05, "trapezoid", 1.0) == pytest.approx(0.5)
    assert learning_rate_at(0.5, "trapezoid", 1.0) == 1.0 and learning_rate_at(0.9, "trapezoid", 1.0) == pytest.approx(0.5)
    cosine = [learning_rate_at(s / 100, "cosine", 1.0, warmup_fraction=0.1) for s in range(101)]  # also fine-tuning's
    assert cosine[0] == 0.0 and cosine[5] == pytest.approx(0.5) and cosine[10] == pytest.approx(1.0)
    assert cosine[55] == pytest.approx(0.5) and cosine[100] == pytest.approx(0.0)
    assert all(x >= y for x, y in zip(cosine[10:], cosine[11:]))
    with pytest.raises(CramError, match="schedule"):
        learning_rate_at(0.5, "linear", 1.0)
    assert batch_size_at(0.0, 8192, 128, 0.6) == 128
    assert batch_size_at(0.15, 8192, 128, 0.6) == 2176  # 128 + 8064 / 4 = 2144, rounded to whole micro steps
    assert batch_size_at(0.6, 8192, 128, 0.6) == 8192 and batch_size_at(0.9, 8192, 128, 0.6) == 8192
    assert batch_size_at(0.0, 8192, 128, 0.0) == 8192  # no ramp
    assert all(batch_size_at(p / 100, 8192, 128, 0.6) % 128 == 0 for p in range(101))


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


@pytest.mark.skipif(not os.uname().sysname == "Linux", reason="glibc's mallopt")
def test_warm_cpu_training_steps_reuse_memory_instead_of_page_faulting():
    # each step frees and reallocates ~100 MB of MLM logits (512 masked x 50,304); glibc unmaps such blocks on
    # free, so without pick_device('cpu')'s setting every step faults them in again (~17% of a 4 x 256 step)
    probe = ("import resource, sys, torch\n"
             "from model import Bert, BertConfig, grad_scaler, mask_tokens, pick_device, train_step\n"
             "if sys.argv[1] == 'cpu': pick_device('cpu')\n"
             "torch.manual_seed(0)\n"
             "m = Bert(BertConfig(n_layer=1, n_head=2, n_embd=32, n_inner=64))\n"
             "opt = m.configure_optimizers(0.01, 1e-3, (0.9, 0.98), 1e-12, 'cpu')\n"
             "g = torch.Generator().manual_seed(0)\n"
             "batch = lambda: mask_tokens(torch.randint(0, 50257, (16, 128), generator=g), 0.25, 50259, 50257, g)\n"
             "faults = []\n"
             "for _ in range(8):\n"
             "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
             "    train_step(m, opt, grad_scaler('cpu', torch.float32), batch, 1, torch.autocast('cpu', enabled=False), 0.5)\n"
             "    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
             "print(*faults)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    warm = {}
    for mode in ("default", "cpu"):
        r = subprocess.run([sys.executable, "-c", probe, mode], cwd=root, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        warm[mode] = max(int(f) for f in r.stdout.split()[-3:])
    logits_pages = 512 * 50304 * 4 // os.sysconf("SC_PAGE_SIZE")
    assert warm["default"] > logits_pages // 2, warm  # glibc's default: the logits fault in again every step
    # pick_device('cpu'): the freed blocks are reused as they are (usually a handful of faults; once in ~8 runs
    # on a busy machine ~1,400, 6% of the logits' pages, as the heap grew once more: a bound with room)
    assert warm["cpu"] < logits_pages // 5, warm


def test_device_type_of_an_indexed_device_and_a_bad_name(monkeypatch):
    if not torch.cuda.is_available():  # a CPU build must say so in one line, not assert deep inside torch
        with pytest.raises(CramError, match="--device=cuda:1: this torch .* sees no cuda device; use --device=auto"):
            pick_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # every 'if cuda' (compile, fused AdamW, synchronize before timing) tests the type: cuda:1 must be 'cuda'
    assert pick_device("cuda:1") == ("cuda:1", "cuda")
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


def test_cpu_precision_follows_the_measured_matmul_speed(monkeypatch):
    # a CPU without bf16 units runs a bf16 matmul ~250x slower than fp32: measured, never assumed
    speeds = {torch.float32: 140e9, torch.bfloat16: 0.27e9, torch.float16: 3e9}
    monkeypatch.setattr(model, "_matmul_flops", lambda device, dtype, n, reps=10: speeds[dtype])
    assert autocast_dtype("cpu", "auto") == torch.float32
    with pytest.raises(CramError, match="--dtype=float16: this CPU runs float16 matmuls 47x slower than float32"):
        autocast_dtype("cpu", "float16")  # asked for by name: refused in one line rather than crawling
    speeds[torch.bfloat16] = 300e9  # a CPU with bf16 units
    assert autocast_dtype("cpu", "auto") == torch.bfloat16 and autocast_dtype("cpu", "bfloat16") == torch.bfloat16
    assert autocast_dtype("cpu", "float32") == torch.float32
    with pytest.raises(CramError, match="--dtype=fp16: use auto, float32, bfloat16 or float16"):
        autocast_dtype("cpu", "fp16")
