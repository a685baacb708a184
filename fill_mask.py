"""
What a checkpoint learned: the top-k fills of every [MASK] in a text, with their probabilities.

    python fill_mask.py --ckpt=out/ckpt.pt --text="The capital of France is [MASK]."
    python fill_mask.py --ckpt=out-cpu/ckpt.pt --text="He [MASK] the door and [MASK] in." --top_k=10

The text is read as pretraining blocks are: [CLS] + its tokens + [SEP]. A [MASK] after a space
stands for a word with that space (gpt2's tokens carry their leading space): "is [MASK]." asks
for " Paris", not " ".
"""
import torch

import configurator
from configurator import CramError
from model import Bert
from prepare import Tokenizer
from runtime import bert_config, load_checkpoint, load_weights, pick_device

# -----------------------------------------------------------------------------
ckpt = "out/ckpt.pt"  # a checkpoint written by train.py
text = "The capital of France is [MASK]."  # one or more [MASK]s
top_k = 5  # fills shown per [MASK]
device = "cpu"  # auto | cpu | cuda | mps: one sentence needs no GPU
# -----------------------------------------------------------------------------
_MASK = "[MASK]"


def encode_with_masks(tok, text):
    """[CLS] + the text's ids with mask_id for every [MASK] + [SEP]."""
    pieces = text.split(_MASK)
    ids = [tok.cls_id]
    for i, piece in enumerate(pieces):
        if i < len(pieces) - 1 and piece.endswith(" "):
            piece = piece[:-1]  # the space belongs to the masked word
        ids += tok.encode(piece)
        if i < len(pieces) - 1:
            ids.append(tok.mask_id)
    return ids + [tok.sep_id]


@torch.no_grad()
def fill(model, tok, text, k):
    """[(position, [(token text, probability), ...] best first)] for each [MASK] in text."""
    if _MASK not in text:
        raise CramError(f"--text={text!r} has no {_MASK}: put {_MASK} where a word should be "
                        f"predicted, e.g. --text=\"The capital of France is {_MASK}.\"")
    ids = encode_with_masks(tok, text)
    block = model.config.block_size
    if len(ids) > block:
        raise CramError(f"--text is {len(ids)} tokens with [CLS] and [SEP], beyond the model's "
                        f"block of {block}: shorten it")
    device_of_model = next(model.parameters()).device
    idx = torch.tensor([ids], device=device_of_model)
    logits, _ = model(idx)
    # ids the model never saw in training have probability 0
    probs = torch.softmax(logits[0].float(), dim=-1)
    fills = []
    for pos in (idx[0] == tok.mask_id).nonzero().flatten().tolist():
        best = probs[pos].topk(min(k, probs.size(-1)))
        words = [tok.decode([i]) for i in best.indices.tolist()]
        fills.append((pos, list(zip(words, best.values.tolist()))))
    return fills


def load_model(path, device_name):
    checkpoint = load_checkpoint(path)
    tok = Tokenizer.from_meta(checkpoint["meta"], source=path)
    model = Bert(bert_config(**checkpoint["model_args"]))
    load_weights(model, checkpoint["model"], path)
    return model.to(device_name).eval(), tok, checkpoint["step"]


def main():
    configurator.require_at_least(1, top_k=top_k)
    device_name, _ = pick_device(device)
    model, tok, step = load_model(ckpt, device_name)
    fills = fill(model, tok, text, top_k)
    print(f"{ckpt} (step {step}): {text}")
    filled = text
    for n, (pos, best) in enumerate(fills, 1):
        shown = "  ".join(f"{word.strip() or repr(word)} {p:.3f}" for word, p in best)
        print(f"  {_MASK} {n} (token {pos}): {shown}")
        filled = filled.replace(_MASK, best[0][0].strip() or best[0][0], 1)
    print(f"  top fills: {filled}")
    return fills


if __name__ == "__main__":
    configurator.configure(globals())
    main()
