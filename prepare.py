"""
Prepare a pretraining corpus: any English text -> memmapped uint16 blocks of block_size tokens.

    python prepare.py                                        # English Wikipedia from the HF hub
    python prepare.py --dataset=../shared/wikipedia --out_dir=data/wikipedia
    python prepare.py --dataset=../shared/text --out_dir=data/local --split_paragraphs=True
    python prepare.py --dataset=wikimedia/wikipedia:20231101.en,HuggingFaceFW/fineweb-edu:sample-10BT

--dataset takes comma-separated sources, interleaved document by document: Hugging Face hub
datasets as name[:config] (streamed, nothing is downloaded up front;
`HuggingFaceFW/fineweb-edu:sample-10BT` is a larger, cleaner alternative to the default Wikipedia,
the paper's corpus being Wikipedia + BookCorpus) and local .txt files (one document each),
.jsonl/.json/.parquet files with a text column, folders (searched recursively) and globs. Documents
are cleaned (NFC, whitespace collapsed), filtered as in the paper (too short, too many tokens per
character, exact duplicates), split into train/val by document, joined with [SEP], cut into blocks
that each start with [CLS] (as BERT's do: fine-tuning classifies from that position, so pretraining
must have shown it) and written as out_dir/{train,val}.bin, token_counts.npy (how often each id
occurs in train.bin) and meta.json (written last: a folder with meta.json is complete).

Also home of the one tokenizer helper and the readers of a prepared folder that train.py, bench.py,
finetune_glue.py and fill_mask.py import.
"""
import collections
import glob
import hashlib
import json
import os
import random
import re
import sys
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import configurator
from configurator import CramError

# -----------------------------------------------------------------------------
# settings, overridden by `python prepare.py [config.py] --key=value` (see configurator.py)
dataset = "wikimedia/wikipedia:20231101.en"  # comma-separated hub name[:config], files, folders
out_dir = "data/wikipedia"
text_column = "text"  # the text's column in hub datasets and .jsonl/.json/.parquet files
split_paragraphs = False  # .txt files: each blank-line separated paragraph is a document
tokenizer = "gpt2"
block_size = 128
max_tokens = 0  # stop after this many tokens are kept (0 = no cap)
min_chars = 50  # shorter documents (after cleaning) go: headings, page numbers, one-word lines
# gpt2 gives 0.22-0.27 tokens/char on whole books and Wikipedia-like prose, up to ~0.33 on
# quote-heavy dialogue paragraphs; tables, JSON, URLs and encoded blobs give 0.34-0.76
max_tokens_per_char = 0.33  # documents above it go (0 = no filter); scale it with a cut vocabulary
# (--tokenizer=gpt2:8192 spells the same text in ~1.25x the tokens: 0.41 keeps the same documents)
val_fraction = 0.005
max_val_blocks = 2000
order = "shuffle"  # shuffle | sorted (most '.' first: the paper's curriculum) | none (as read)
seed = 1337
num_proc = os.cpu_count() or 1  # tokenizer threads: tiktoken releases the GIL
force = False  # replace an existing prepared out_dir
# -----------------------------------------------------------------------------
_SETTINGS = configurator.settings_of(dict(globals()))
_EXTS = (".txt", ".jsonl", ".json", ".parquet")
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")
_SHORT, _FILTERED = -1, -2  # record kinds besides a kept document's digest
_OUTPUTS = ("train.bin", "val.bin", "token_counts.npy", "meta.json")


# -----------------------------------------------------------------------------
# the tokenizer: tiktoken's gpt2 BPE plus BERT's special tokens appended after the BPE ids

class Tokenizer:
    SPECIALS = ("[CLS]", "[SEP]", "[MASK]", "[PAD]")

    def __init__(self, name="gpt2"):
        """name: a tiktoken encoding, or "encoding:n" for that BPE cut to its first n ranks (the 256
        bytes and the earliest merges): a smaller vocabulary of the same kind, since every token is
        merged from tokens of lower rank (gpt2:8192 spells Wikipedia in ~25% more tokens)."""
        import tiktoken
        base, _, cut = name.partition(":")
        try:
            self.enc = tiktoken.get_encoding(base)
        except ValueError as e:  # an encoding name tiktoken does not know
            raise CramError(f"tokenizer: unknown tiktoken encoding '{base}' ({e})") from None
        except Exception as e:  # first use downloads the BPE files; offline that fails in requests
            raise CramError(f"tokenizer: could not load tiktoken encoding '{name}' "
                            f"({type(e).__name__}): with no network, point TIKTOKEN_CACHE_DIR at a "
                            f"folder holding its cached BPE files, e.g. "
                            f"export TIKTOKEN_CACHE_DIR=../shared/tiktoken_cache") from None
        if cut:
            # tiktoken keeps an encoding's ranks and pattern private: its constructor's inputs
            ranks = self.enc._mergeable_ranks
            if not cut.isdigit() or not 256 < int(cut) <= len(ranks):
                raise CramError(f"--tokenizer={name}: cut {base} at a whole number of ranks in "
                                f"(256, {len(ranks)}], e.g. {base}:8192")
            kept = {piece: rank for piece, rank in ranks.items() if rank < int(cut)}
            self.enc = tiktoken.Encoding(name=name, pat_str=self.enc._pat_str,
                                         mergeable_ranks=kept, special_tokens={})
        self.name = name
        self.n_bpe = self.enc.n_vocab  # 50257 for gpt2
        self.special_ids = {tok: self.n_bpe + i for i, tok in enumerate(self.SPECIALS)}
        self.cls_id, self.sep_id, self.mask_id, self.pad_id = self.special_ids.values()
        # the model's embedding is padded to a multiple of 64 (50304): faster matmuls
        self.n_ids = self.n_bpe + len(self.SPECIALS)
        self.vocab_size = -(-self.n_ids // 64) * 64

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
        expected = tok.meta()
        for key in ("vocab_size", "bpe_vocab_size", "special_ids"):
            if key in meta and meta[key] != expected[key]:
                raise CramError(f"{source}: {key} is {meta[key]} but tokenizer '{tok.name}' gives "
                                f"{expected[key]}; re-run prepare.py with this version of cram")
        return tok


# -----------------------------------------------------------------------------
# reading a prepared folder: the one place that knows the format

def read_meta(data_dir):
    path = os.path.join(data_dir, "meta.json")
    if not os.path.isfile(path):
        raise CramError(f"{path} not found: prepare the data first, e.g. python prepare.py "
                        f"--out_dir={data_dir}")
    try:
        with open(path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise CramError(f"{path} is not valid JSON ({e}): prepare the folder again with "
                        f"--force=True") from None
    if meta.get("block_prefix") != "[CLS]":
        raise CramError(f"{path}: prepared by an older prepare.py, whose blocks do not start with "
                        f"[CLS]: re-run prepare.py with --force=True for {data_dir}")
    return meta


def open_blocks(data_dir, split, block_size):
    """A split's blocks as a read-only (n, block_size) uint16 memmap, checked for whole blocks."""
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.isfile(path):
        raise CramError(f"{path} not found: run prepare.py again for {data_dir} (an interrupted "
                        f"run leaves no {split}.bin)")
    size = os.path.getsize(path)
    if size % (2 * block_size):
        raise CramError(f"{path}: {size} bytes is not a whole number of {block_size}-token uint16 "
                        f"blocks; the file is truncated or from another prepare run: re-run "
                        f"prepare.py")
    if size == 0:
        return np.zeros((0, block_size), dtype=np.uint16)  # np.memmap refuses empty files
    return np.memmap(path, dtype=np.uint16, mode="r").reshape(-1, block_size)


def read_token_counts(data_dir, vocab_size):
    """How often each token id occurs in train.bin; the ids that never do are left out of the MLM
    softmax."""
    path = os.path.join(data_dir, "token_counts.npy")
    try:
        counts = np.load(path)
    except (OSError, ValueError) as e:
        raise CramError(f"{path} is missing or unreadable ({type(e).__name__}): prepare the folder "
                        f"again with python prepare.py --force=True --out_dir={data_dir}") from None
    if counts.shape != (vocab_size,):
        raise CramError(f"{path} holds {counts.shape} counts, not one per token id ({vocab_size}): "
                        f"prepare the folder again with --force=True")
    return counts


# -----------------------------------------------------------------------------
# sources: each yields the raw text of one document at a time

def _local_files(item):
    path = os.path.expanduser(item)
    extensions = "/".join(_EXTS)
    if any(c in path for c in "*?["):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            raise CramError(f"--dataset: the glob {item} matches no file")
    elif os.path.isdir(path):
        files = sorted(os.path.join(d, f) for d, _, names in os.walk(path) for f in names)
        files = [f for f in files if f.lower().endswith(_EXTS)]
        if not files:
            raise CramError(f"--dataset: no {extensions} file under the folder {item}")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise CramError(f"--dataset: {item} does not exist: pass an existing file, folder or glob")
    bad = [f for f in files if not f.lower().endswith(_EXTS)]
    if bad:
        raise CramError(f"--dataset: {bad[0]} is not a {extensions} file: pass only text files or "
                        f"their folder")
    return files


def _texts(rows, column, where):
    """The text column of a stream of rows, checked on the first row."""
    for i, row in enumerate(rows):
        if i == 0 and column not in row:
            raise CramError(f"{where}: no column '{column}' (it has: {', '.join(row)}); "
                            f"pass --text_column=NAME")
        text = row[column]
        if text is None:
            yield ""
        else:
            yield text if isinstance(text, str) else str(text)


def _iter_files(files, column, split_paragraphs, counts):
    for path in files:
        counts["files"] += 1
        if not path.lower().endswith(".txt"):
            if os.path.getsize(path) == 0:  # no rows (datasets fails on it with StopIteration)
                continue
            from datasets import load_dataset  # imported only when needed: it takes a second
            builder = "parquet" if path.lower().endswith(".parquet") else "json"
            try:
                rows = load_dataset(builder, data_files=path, split="train", streaming=True)
                yield from _texts(rows, column, path)
            except Exception as e:  # malformed JSON, a truncated parquet file
                raise CramError(f"{path}: could not read it as {builder} "
                                f"({type(e).__name__}: {str(e)[:200]})") from None
            continue
        with open(path, "rb") as f:
            data = f.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:  # a stray Latin-1 byte should cost one character, not the run
            text = data.decode("utf-8", errors="replace")
            counts["replaced_chars"] += text.count("\ufffd")
        text = text.removeprefix("\ufeff")
        if split_paragraphs:
            yield from (p for p in _PARAGRAPH.split(text) if p and not p.isspace())
        else:
            yield text


def _iter_hub(item, column):
    """Streamed, so work starts at once and nothing huge is downloaded first; opened eagerly so that
    a bad name fails early."""
    name, _, config = item.partition(":")
    hint = (f"pass local files instead, e.g. --dataset=path/to/*.txt or a folder of "
            f"{'/'.join(_EXTS)} files (offline, HF_DATASETS_OFFLINE=1, only datasets already in "
            f"the HF cache load)")
    try:
        from datasets import load_dataset
        ds = load_dataset(name, config or None, split="train", streaming=True)
    except Exception as e:
        first_line = str(e).splitlines()[0][:200] if str(e) else ""
        raise CramError(f"--dataset: {item} is no local path and the Hugging Face hub could not "
                        f"load it ({type(e).__name__}: {first_line}); {hint}") from None

    def gen():
        try:
            yield from _texts(ds, column, f"--dataset={item}")
        except Exception as e:  # a connection lost mid-stream
            raise CramError(f"--dataset: reading {item} from the hub failed "
                            f"({type(e).__name__}: {e}); {hint}") from None
    return gen()


def _is_local(item):
    globbed = any(ch in item for ch in "*?[")
    return os.path.exists(item) or globbed or item.startswith((".", "/", "~")) or \
        item.lower().endswith(_EXTS)


def _sources(spec, column, split_paragraphs, counts):
    """Every source opened up front, so a typo fails before any work; documents interleaved
    round-robin."""
    iters = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if _is_local(item):
            iters.append(_iter_files(_local_files(item), column, split_paragraphs, counts))
        else:
            iters.append(_iter_hub(item, column))
    if not iters:
        raise CramError("--dataset is empty: pass a hub name such as "
                        "wikimedia/wikipedia:20231101.en or local files")

    def roundrobin():
        while iters:
            for it in list(iters):
                try:
                    yield next(it)
                except StopIteration:
                    iters.remove(it)
    return roundrobin()


# -----------------------------------------------------------------------------
# the work on one chunk of raw documents, in a worker thread

def _process(tok, docs):
    """Clean, measure and tokenize; returns (records, tokens, bytes, chars), where a record is
    (kind, n_tokens, chars)."""
    records, tokens, nbytes, nchars = [], [], 0, 0
    for doc in docs:
        nbytes += len(doc.encode("utf-8"))
        # hard-wrapped lines and indentation would otherwise cost tokens that carry nothing
        doc = " ".join(unicodedata.normalize("NFC", doc).split())
        nchars += len(doc)
        if len(doc) < max(min_chars, 1):
            records.append((_SHORT, 0, len(doc)))
            continue
        ids = tok.encode(doc)
        if max_tokens_per_char and len(ids) > max_tokens_per_char * len(doc):
            records.append((_FILTERED, 0, len(doc)))
            continue
        digest = hashlib.blake2b(doc.encode("utf-8"), digest_size=8).digest()
        records.append((int.from_bytes(digest, "little"), len(ids), len(doc)))
        tokens.extend(ids)
    return records, np.array(tokens, dtype=np.uint16), nbytes, nchars


def _chunks(docs, max_chars=1 << 18, max_docs=4096):
    buf, n = [], 0
    for doc in docs:
        buf.append(doc)
        n += len(doc)
        if n >= max_chars or len(buf) >= max_docs:
            yield buf
            buf, n = [], 0
    if buf:
        yield buf


# -----------------------------------------------------------------------------
# packing and ordering

class _Packer:
    """Documents joined by [SEP] into a flat uint16 file of whole blocks, each [CLS] +
    block_size - 1 tokens of the stream (a document may go on in the next block); a trailing
    partial block is dropped."""

    def __init__(self, path, block_size, sep_id, cls_id, max_blocks=None):
        self.f = open(path, "wb")
        self.block_size = block_size
        self.body = block_size - 1
        self.max_blocks = max_blocks
        self.sep = np.array([sep_id], dtype=np.uint16)
        self.cls_id = cls_id
        self.parts, self.pending, self.blocks, self.docs = [], 0, 0, 0
        self.counts = np.zeros(1 << 16, dtype=np.int64)  # token histogram of what was written

    @property
    def ready(self):
        """Blocks written plus those the pending tokens already fill."""
        return self.blocks + self.pending // self.body

    @property
    def full(self):
        return self.max_blocks is not None and self.ready >= self.max_blocks

    def add(self, ids):
        if self.docs:
            self.parts.append(self.sep)
        self.parts.append(ids)
        self.pending += len(ids) + (self.docs > 0)
        self.docs += 1
        if self.pending >= 1 << 22:
            self._flush()

    def _flush(self):
        buf = np.concatenate(self.parts) if self.parts else np.zeros(0, np.uint16)
        n = len(buf) // self.body
        if self.max_blocks is not None:
            n = min(n, self.max_blocks - self.blocks)
        blocks = np.empty((n, self.block_size), dtype=np.uint16)
        blocks[:, 0] = self.cls_id
        blocks[:, 1:] = buf[:n * self.body].reshape(n, self.body)
        blocks.tofile(self.f)
        self.counts += np.bincount(blocks.ravel(), minlength=1 << 16)
        self.blocks += n
        self.parts = [buf[n * self.body:]]
        self.pending = len(buf) - n * self.body

    def close(self):
        self._flush()
        self.f.close()
        return self.blocks


def _period_ids(tok):
    """BPE ids of a sentence-ending '.', alone or glued to closing quotes or brackets ('."')."""
    ids = []
    for i in range(tok.n_bpe):
        s = tok.enc.decode_single_token_bytes(i).decode("utf-8", errors="replace")
        if s.strip(" \"')]}\u2019\u201d") == ".":
            ids.append(i)
    return np.array(ids)


def _reorder(src, dst, n_blocks, tok, split_index):
    """Write src's blocks to dst in the chosen order, a chunk at a time (bounded memory whatever the
    size)."""
    x = None
    if n_blocks:
        x = np.memmap(src, dtype=np.uint16, mode="r", shape=(n_blocks, block_size))
    step = max(1, (1 << 24) // block_size)  # 32 MB of tokens per chunk
    if order == "shuffle":
        # 4 bytes a block in memory
        perm = np.arange(n_blocks, dtype=np.uint32 if n_blocks < 2**32 else np.int64)
        np.random.default_rng([seed, split_index]).shuffle(perm)
    else:
        is_period = np.zeros(tok.vocab_size, dtype=bool)
        is_period[_period_ids(tok)] = True
        counts = np.zeros(n_blocks, dtype=np.int64)
        for i in range(0, n_blocks, step):
            counts[i:i + step] = is_period[x[i:i + step]].sum(axis=1)
        perm = np.argsort(-counts, kind="stable")  # stable: ties keep document order
    with open(dst, "wb") as f:
        for i in range(0, n_blocks, step):
            x[perm[i:i + step]].tofile(f)


# -----------------------------------------------------------------------------
# the pipeline

def _check(tok):
    configurator.require_folder("out_dir", out_dir)
    if not 2 <= block_size <= 65535:
        raise CramError(f"--block_size={block_size}: must be between 2 and 65535 (the paper: 128)")
    if tok.vocab_size > 65536:
        raise CramError(f"--tokenizer={tokenizer}: its vocabulary of {tok.vocab_size} does not fit "
                        f"the uint16 files")
    if order not in ("shuffle", "sorted", "none"):
        raise CramError(f"--order={order}: must be shuffle, sorted or none")
    if not 0 <= val_fraction < 1:
        raise CramError(f"--val_fraction={val_fraction}: must be in [0, 1), e.g. 0.005")
    if num_proc < 1 or max_tokens < 0 or max_val_blocks < 0 or max_tokens_per_char < 0:
        raise CramError("--num_proc must be >= 1 and --max_tokens, --max_val_blocks, "
                        "--max_tokens_per_char >= 0")


def main():
    """Prepare out_dir from the settings; returns meta."""
    t0 = time.time()
    tok = Tokenizer(tokenizer)
    _check(tok)
    final = {name: os.path.join(out_dir, name) for name in _OUTPUTS}
    if not force and any(os.path.exists(p) for p in final.values()):
        raise CramError(f"{out_dir} already holds a prepared corpus: pass --force=True to replace "
                        f"it, or another --out_dir")
    counts = collections.Counter(files=0, replaced_chars=0)
    docs = _sources(dataset, text_column, split_paragraphs, counts)
    os.makedirs(out_dir, exist_ok=True)
    tmp = {name: p + ".tmp" for name, p in final.items()}
    for name in ("train.bin", "val.bin"):
        tmp[f"{name}.order"] = final[name] + ".order.tmp"
    try:
        meta = _pipeline(tok, counts, docs, tmp, final, t0)
    finally:  # an interrupted run leaves no half file under a final name, and no litter
        for p in tmp.values():
            if os.path.exists(p):
                os.remove(p)
    return meta


def run(**overrides):
    """main() with some settings changed, as --key=value would change them: for tests, notebooks."""
    with configurator.overridden(globals(), **overrides):
        return main()


def _pipeline(tok, counts, docs, tmp, final, t0):
    train = _Packer(tmp["train.bin"], block_size, tok.sep_id, tok.cls_id)
    val = _Packer(tmp["val.bin"], block_size, tok.sep_id, tok.cls_id, max_blocks=max_val_blocks)
    rng = random.Random(seed)
    seen = set()
    last_report = time.time()
    for k in ("docs_read", "docs_short", "docs_filtered", "docs_duplicate", "chars",
              "chars_filtered", "tokens", "bytes"):
        counts[k] = 0

    def consume(result):
        """Dedup and split in submission order, so the output does not depend on thread timing."""
        records, tokens, nbytes, nchars = result
        counts["bytes"] += nbytes
        counts["chars"] += nchars
        pos = 0
        for kind, n, chars in records:
            counts["docs_read"] += 1
            if kind == _SHORT:
                counts["docs_short"] += 1
                continue
            if kind == _FILTERED:
                counts["docs_filtered"] += 1
                counts["chars_filtered"] += chars
                continue
            ids = tokens[pos:pos + n]
            pos += n
            if kind in seen:
                counts["docs_duplicate"] += 1
                continue
            seen.add(kind)
            if max_tokens:
                ids = ids[:max_tokens - counts["tokens"]]
            counts["tokens"] += len(ids)
            # a tiny corpus still gets a validation block: while val has none, every document but
            # the first goes there
            needs_val = train.docs > 0 and val.ready == 0
            to_val = val_fraction > 0 and not val.full
            to_val = to_val and (rng.random() < val_fraction or needs_val)  # rng only drawn here
            (val if to_val else train).add(ids)
            if max_tokens and counts["tokens"] >= max_tokens:
                return True
        return False

    with ThreadPoolExecutor(num_proc) as pool:
        pending, done = collections.deque(), False
        for chunk in _chunks(docs):
            pending.append(pool.submit(_process, tok, chunk))
            if len(pending) >= 2 * num_proc:  # bounded: a few chunks in flight, never the corpus
                done = consume(pending.popleft().result())
            if time.time() - last_report > 5:
                last_report = time.time()
                mb = counts["bytes"] / 1e6
                print(f"prepare: {counts['docs_read']:,} documents, {mb:,.0f} MB, "
                      f"{counts['tokens'] / 1e6:,.1f}M tokens, {mb / (time.time() - t0):.1f} MB/s",
                      file=sys.stderr, flush=True)
            if done:
                break
        while pending and not done:
            done = consume(pending.popleft().result())
        for f in pending:
            f.cancel()
    n_train = train.close()
    n_val = val.close()
    if n_train == 0:
        raise CramError(
            f"--dataset={dataset}: no training block left: read {counts['docs_read']} documents, "
            f"dropped {counts['docs_short']} shorter than --min_chars={min_chars}, "
            f"{counts['docs_filtered']} above --max_tokens_per_char={max_tokens_per_char}, "
            f"{counts['docs_duplicate']} duplicates; the rest made {counts['tokens']} tokens for "
            f"--block_size={block_size}: relax those settings or add text")
    done_bins = {}
    for name, n, i in (("train.bin", n_train, 0), ("val.bin", n_val, 1)):
        if order == "none":
            done_bins[name] = tmp[name]
        else:
            _reorder(tmp[name], tmp[name + ".order"], n, tok, i)
            os.remove(tmp[name])  # while a corpus is replaced, disk holds the old and the new only
            done_bins[name] = tmp[name + ".order"]
    # the cross-entropy of always guessing the unigram distribution: a masked LM must beat it
    bpe_counts = train.counts[:tok.n_bpe]
    p = bpe_counts[bpe_counts > 0] / max(1, bpe_counts.sum())
    unigram_entropy = float(-(p * np.log(p)).sum())
    seconds = time.time() - t0
    meta = {**tok.meta(), "block_size": block_size, "block_prefix": "[CLS]", "dtype": "uint16",
            "order": order, "seed": seed, "train_blocks": n_train, "val_blocks": n_val,
            "unigram_entropy": round(unigram_entropy, 4), "train_docs": train.docs,
            "val_docs": val.docs, "counts": dict(counts), "source": dataset,
            "options": {k: globals()[k] for k in _SETTINGS}, "seconds": round(seconds, 2),
            "mb_per_s": round(counts["bytes"] / 1e6 / seconds, 2)}
    with open(tmp["meta.json"], "w") as f:
        json.dump(meta, f, indent=2)
    with open(tmp["token_counts.npy"], "wb") as f:
        np.save(f, train.counts[:tok.vocab_size])
    # a corpus being replaced (--force) stays whole until the new one is complete; then meta.json
    # goes first, so a crash among the renames leaves a folder that says it is not prepared rather
    # than a mixed one
    if os.path.exists(final["meta.json"]):
        os.remove(final["meta.json"])
    for name, path in {**done_bins, "token_counts.npy": tmp["token_counts.npy"]}.items():
        os.replace(path, final[name])
    os.replace(tmp["meta.json"], final["meta.json"])
    _report(meta)
    return meta


def _report(meta):
    n = meta["counts"]
    read = max(1, n["docs_read"])
    print(f"read {n['docs_read']:,} documents ({n['files']} files, {n['bytes'] / 1e6:.1f} MB, "
          f"{n['replaced_chars']} undecodable bytes replaced); dropped {n['docs_short']:,} short "
          f"({n['docs_short'] / read:.1%}), {n['docs_filtered']:,} by the tokens/char filter "
          f"({n['docs_filtered'] / read:.1%} of documents, "
          f"{n['chars_filtered'] / max(1, n['chars']):.2%} of characters), "
          f"{n['docs_duplicate']:,} duplicates")
    print(f"kept {meta['train_docs'] + meta['val_docs']:,} documents, {n['tokens']:,} tokens -> "
          f"{meta['train_blocks']:,} train + {meta['val_blocks']:,} val blocks of {block_size} in "
          f"{out_dir} (order {order}); unigram entropy {meta['unigram_entropy']:.3f} nats")
    print(f"{meta['seconds']:.1f} s, {meta['mb_per_s']:.1f} MB/s")


if __name__ == "__main__":
    configurator.configure(globals())
    main()
