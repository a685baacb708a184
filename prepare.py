"""
Prepare a pretraining corpus: any English text -> memmapped uint16 blocks of block_size tokens.

    python prepare.py                                        # English Wikipedia from the HF hub
    python prepare.py --dataset=../shared/text --out_dir=data/local

Also home of the one tokenizer helper that train.py and finetune_glue.py import.
"""
import os

import numpy as np

from configurator import CramError


# -----------------------------------------------------------------------------
# the tokenizer: tiktoken's gpt2 BPE plus BERT's special tokens appended after the BPE ids

class Tokenizer:
    SPECIALS = ("[CLS]", "[SEP]", "[MASK]", "[PAD]")

    def __init__(self, name="gpt2"):
        import tiktoken
        try:
            self.enc = tiktoken.get_encoding(name)
        except ValueError as e:  # an encoding name tiktoken does not know
            raise CramError(f"tokenizer: unknown tiktoken encoding '{name}' ({e})")
        except Exception as e:  # first use downloads the BPE files; offline that fails deep in requests
            raise CramError(f"tokenizer: could not load tiktoken encoding '{name}' ({type(e).__name__}): with no network, "
                            f"point TIKTOKEN_CACHE_DIR at a folder holding its cached BPE files, "
                            f"e.g. export TIKTOKEN_CACHE_DIR=../shared/tiktoken_cache")
        self.name = name
        self.n_bpe = self.enc.n_vocab  # 50257 for gpt2
        self.special_ids = {tok: self.n_bpe + i for i, tok in enumerate(self.SPECIALS)}
        self.cls_id, self.sep_id, self.mask_id, self.pad_id = self.special_ids.values()
        # the model's embedding is padded to a multiple of 64 (50304): faster matmuls, unused rows never seen
        self.vocab_size = -(-(self.n_bpe + len(self.SPECIALS)) // 64) * 64

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        names = {i: tok for tok, i in self.special_ids.items()}
        out, run = [], []
        for i in map(int, ids):
            if i < self.n_bpe:
                run.append(i)
                continue
            out.append(self.enc.decode(run, errors="replace"))
            out.append(names.get(i, f"[UNUSED{i}]"))
            run = []
        out.append(self.enc.decode(run, errors="replace"))
        return "".join(out)

    def meta(self):
        return {"tokenizer": self.name, "vocab_size": self.vocab_size, "bpe_vocab_size": self.n_bpe,
                "special_ids": dict(self.special_ids)}

    @classmethod
    def from_meta(cls, meta, source="meta.json"):
        """The tokenizer a prepared folder or checkpoint was made with, checked id for id."""
        tok = cls(meta.get("tokenizer", "gpt2"))
        mine = tok.meta()
        for key in ("vocab_size", "bpe_vocab_size", "special_ids"):
            if key in meta and meta[key] != mine[key]:
                raise CramError(f"{source}: {key} is {meta[key]} but tokenizer '{tok.name}' gives {mine[key]}; "
                                f"re-run prepare.py with this version of cram")
        return tok
