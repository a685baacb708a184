"""fill_mask.py: the top-k fills of each [MASK], best first, and one-line errors for what a user gets wrong."""
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

import fill_mask
from configurator import CramError
from conftest import script_error
from model import Bert, BertConfig
from prepare import Tokenizer
from runtime import save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tok = Tokenizer("gpt2")
    torch.manual_seed(0)
    model = Bert(BertConfig(block_size=16, n_layer=1, n_head=2, n_embd=32, n_inner=64))
    model.decodable[tok.encode(" Paris")[0]] = False  # as train.py does for ids its corpus never has
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    save_checkpoint(path, {"model": model.state_dict(), "model_args": asdict(model.config), "meta": tok.meta(),
                           "step": 3, "tokens_seen": 0})
    return path


def cli(*args):
    return subprocess.run([sys.executable, "fill_mask.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_top_k_fills_are_sorted_probabilities(tiny):
    model, tok, step = fill_mask.load_model(tiny, "cpu")
    assert step == 3
    fills = fill_mask.fill(model, tok, "The capital of France is [MASK]. It is [MASK] big.", 7)
    assert [pos for pos, _ in fills] == [6, 10]  # [CLS] + 5 tokens, then the mask; the second after 3 more
    paris = tok.encode(" Paris")[0]
    for _, best in fills:
        probs = [p for _, p in best]
        assert len(best) == 7 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert tok.decode([paris]) not in [word for word, _ in best]  # a never-seen id has probability 0
    # the mask after a space stands for a word with its space: the space is not a token of its own
    assert fill_mask.encode_with_masks(tok, "is [MASK].") == [tok.cls_id, *tok.encode("is"), tok.mask_id,
                                                               *tok.encode("."), tok.sep_id]


def test_errors_in_one_line(tiny, tmp_path):
    model, tok, _ = fill_mask.load_model(tiny, "cpu")
    with pytest.raises(CramError, match=r"has no \[MASK\]: put \[MASK\] where a word should be predicted"):
        fill_mask.fill(model, tok, "The capital of France is Paris.", 5)
    with pytest.raises(CramError, match="tokens with .CLS. and .SEP., beyond the model's block of 16"):
        fill_mask.fill(model, tok, "one two three four five six seven eight nine ten [MASK] " * 2, 5)
    r = cli(f"--ckpt={tiny}", "--text=no mask here")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("--text='no mask here' has no [MASK]")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert "cannot be read as a checkpoint" in script_error("fill_mask.py", f"--ckpt={tmp_path / 'bad.pt'}")
    r = cli(f"--ckpt={tiny}", "--text=Hello [MASK] world.", "--top_k=3")
    assert r.returncode == 0 and "[MASK] 1 (token 2):" in r.stdout and "top fills: Hello" in r.stdout


def test_weights_of_another_network_are_refused_by_name(tiny, tmp_path):
    # a fork renamed a layer after training: every script that loads weights names the file and the keys
    ckpt = torch.load(tiny, weights_only=True)
    ckpt["model"]["ln_final.weight"] = ckpt["model"].pop("ln_f.weight")
    path = str(tmp_path / "renamed.pt")
    torch.save(ckpt, path)
    err = script_error("fill_mask.py", f"--ckpt={path}", "--text=Hello [MASK].")
    assert err.startswith(f"{path}: its weights do not fit this model.py")
    assert "missing ['ln_f.weight']" in err and "unexpected ['ln_final.weight']" in err
    ckpt["model"]["ln_f.weight"] = ckpt["model"].pop("ln_final.weight")[:8]
    torch.save(ckpt, path)
    assert "other shape ['ln_f.weight']" in script_error("fill_mask.py", f"--ckpt={path}", "--text=Hello [MASK].")
