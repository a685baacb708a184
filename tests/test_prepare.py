import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

import prepare
from configurator import CramError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TEXT = os.path.join(ROOT, "..", "shared", "text")
WORDS = ("the old man walked slowly to the river where a small boat waited under grey clouds while children "
         "laughed and sang about the summer harvest and the long road home through quiet fields of golden wheat").split()


def doc(i, sentences=4):
    r = random.Random(i)
    return " ".join(" ".join(r.choice(WORDS) for _ in range(r.randint(6, 14))).capitalize() + "."
                    for _ in range(sentences)) + f" Story {i}."


def write_corpus(path, docs):
    path.mkdir(parents=True, exist_ok=True)
    for i, d in enumerate(docs):
        (path / f"{i:03d}.txt").write_text(d)
    return str(path)


def load(out):
    meta = json.load(open(os.path.join(out, "meta.json")))
    bs = meta["block_size"]
    return meta, *(np.fromfile(os.path.join(out, f"{s}.bin"), dtype=np.uint16).reshape(-1, bs) for s in ("train", "val"))


def pieces(tok, blocks):
    """The documents in a split's blocks (order=none): every block starts with [CLS], then the stream goes on,
    [SEP]-separated; the last document may be cut by the block end."""
    assert (blocks[:, 0] == tok.cls_id).all() and not (blocks[:, 1:] == tok.cls_id).any()
    return tok.decode(blocks[:, 1:].ravel()).split("[SEP]") if blocks.size else []


@pytest.fixture(scope="module")
def tok():
    return prepare.Tokenizer("gpt2")


@pytest.fixture
def corpus(tmp_path):
    docs = [doc(i) for i in range(60)]
    return docs, write_corpus(tmp_path / "corpus", docs)


def test_outputs_decode_to_source_and_splits_are_disjoint(tmp_path, corpus, tok):
    docs, src = corpus
    wrapped = "An  oddly\n   wrapped\tline of text that Caf\u0065\u0301 owners write.\n\nIt goes on for a while longer."
    open(os.path.join(src, "wrapped.txt"), "w").write(wrapped)
    out = str(tmp_path / "out")
    meta = prepare.run(dataset=src, out_dir=out, order="none", val_fraction=0.1, block_size=64)
    meta2, train, val = load(out)
    assert meta2 == json.loads(json.dumps(meta))
    for key in ("block_size", "vocab_size", "train_blocks", "val_blocks", "order", "special_ids", "tokenizer"):
        assert key in meta
    assert meta["dtype"] == "uint16" and meta["special_ids"]["[SEP]"] == tok.sep_id and meta["vocab_size"] == 50304
    for split in ("train", "val"):
        size = os.path.getsize(os.path.join(out, f"{split}.bin"))
        assert size == meta[f"{split}_blocks"] * 64 * 2  # a whole number of blocks
    assert train.dtype == np.uint16 and train.shape == (meta["train_blocks"], 64) and len(val) == meta["val_blocks"] > 0
    assert train.max() < meta["vocab_size"] and val.max() < meta["vocab_size"]
    clean = " ".join("An oddly wrapped line of text that Caf\u00e9 owners write. It goes on for a while longer.".split())
    source = set(docs) | {clean}
    tr, va = pieces(tok, train), pieces(tok, val)
    assert all(p in source for p in tr[:-1] + va[:-1])  # whole documents, cleaned, [SEP] at every boundary
    assert any(d.startswith(tr[-1]) for d in source) and any(d.startswith(va[-1]) for d in source)
    assert not set(tr) & set(va)  # no document in both splits
    assert meta["counts"]["docs_read"] == 61 and meta["train_docs"] + meta["val_docs"] == 61


def test_filter_dedup_and_short_counts(tmp_path, tok):
    docs = [doc(i) for i in range(20)]
    noise = [" ".join(f"{random.Random(i).randint(0, 99999)},{i * 7}" for i in range(k, k + 80)) for k in (0, 500)]
    hexblob = os.urandom(400).hex()
    short = ["Chapter I.", "   ", ""]
    dups = [docs[3], "  " + docs[5].replace(" ", "\n", 3) + "\n"]  # the same text once cleaned
    src = write_corpus(tmp_path / "c", docs + noise + [hexblob] + short + dups)
    assert max(len(tok.encode(d)) / len(d) for d in docs) < prepare.max_tokens_per_char
    meta = prepare.run(dataset=src, out_dir=str(tmp_path / "out"), order="none")
    n = meta["counts"]
    assert (n["docs_read"], n["docs_short"], n["docs_filtered"], n["docs_duplicate"]) == (28, 3, 3, 2)
    assert meta["train_docs"] + meta["val_docs"] == 20
    meta = prepare.run(dataset=src, out_dir=str(tmp_path / "out2"), max_tokens_per_char=0, min_chars=0)
    assert (meta["counts"]["docs_short"], meta["counts"]["docs_filtered"]) == (2, 0)  # empty ones still go


def test_sorted_order_and_shuffle_are_permutations(tmp_path, corpus):
    _, src = corpus
    runs = {o: load(prepare.run(dataset=src, out_dir=str(tmp_path / o), order=o, block_size=32)["options"]["out_dir"])
            for o in ("none", "sorted", "shuffle")}
    is_period = np.zeros(50304, bool)
    is_period[prepare._period_ids(prepare.Tokenizer())] = True
    counts = is_period[runs["sorted"][1]].sum(axis=1)
    assert (np.diff(counts) <= 0).all() and counts[0] > counts[-1]
    base = runs["none"][1]
    for o in ("sorted", "shuffle"):
        got = runs[o][1]
        assert not np.array_equal(got, base)
        assert np.array_equal(np.unique(got, axis=0), np.unique(base, axis=0))
    # stable tie-break: blocks with equal counts keep document order
    order = [next(j for j in range(len(base)) if np.array_equal(base[j], b)) for b in runs["sorted"][1]]
    assert all(order[k] < order[k + 1] for k in range(len(order) - 1) if counts[k] == counts[k + 1])


def test_same_seed_same_bytes(tmp_path, corpus):
    _, src = corpus
    a = prepare.run(dataset=src, out_dir=str(tmp_path / "a"), val_fraction=0.1, num_proc=1)
    b = prepare.run(dataset=src, out_dir=str(tmp_path / "b"), val_fraction=0.1, num_proc=3)
    c = prepare.run(dataset=src, out_dir=str(tmp_path / "c"), val_fraction=0.1, seed=7)
    for split in ("train.bin", "val.bin"):
        ab = [open(os.path.join(m["options"]["out_dir"], split), "rb").read() for m in (a, b, c)]
        assert ab[0] == ab[1] and ab[0] != ab[2]


def test_tiny_corpus_gets_a_validation_block(tmp_path):
    src = write_corpus(tmp_path / "c", [doc(1, 12), doc(2, 12)])
    meta = prepare.run(dataset=src, out_dir=str(tmp_path / "o"), block_size=32)
    assert meta["train_blocks"] >= 1 and meta["val_blocks"] >= 1
    one = tmp_path / "one.txt"
    one.write_text("\n\n".join(doc(i) for i in range(300)))
    meta = prepare.run(dataset=str(one), out_dir=str(tmp_path / "p"), split_paragraphs=True)
    assert meta["counts"]["docs_read"] == 300 and meta["val_blocks"] >= 1 and meta["train_blocks"] > 10
    meta = prepare.run(dataset=str(one), out_dir=str(tmp_path / "q"), split_paragraphs=True, max_val_blocks=1,
                       val_fraction=0.5, max_tokens=3000)
    assert meta["val_blocks"] == 1 and meta["counts"]["tokens"] == 3000


def test_json_parquet_globs_and_mixing(tmp_path, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"id": i, "body": doc(i)}) + "\n" for i in range(10)))
    pq.write_table(pa.table({"body": [doc(100 + i) for i in range(10)]}), str(tmp_path / "b.parquet"))
    (tmp_path / "bad.txt").write_bytes(doc(200).encode() + b" caf\xe9 ends here.")
    spec = f"{tmp_path}/*.jsonl,{tmp_path / 'b.parquet'},{tmp_path}/*.txt"
    meta = prepare.run(dataset=spec, out_dir=str(tmp_path / "o"), text_column="body", order="none", val_fraction=0)
    assert meta["counts"]["docs_read"] == 21 and meta["counts"]["replaced_chars"] == 1
    tr = pieces(tok, load(str(tmp_path / "o"))[1])
    assert tr[:4] == [doc(0), doc(100), doc(200) + " caf\ufffd ends here.", doc(1)]  # round-robin over sources
    with pytest.raises(CramError, match=r"a.jsonl: no column 'text' \(it has: id, body\); pass --text_column"):
        prepare.run(dataset=str(tmp_path / "a.jsonl"), out_dir=str(tmp_path / "p"))


def test_errors(tmp_path, corpus):
    _, src = corpus
    out = str(tmp_path / "o")
    with pytest.raises(CramError, match="nowhere.txt does not exist"):
        prepare.run(dataset=str(tmp_path / "nowhere.txt"), out_dir=out)
    with pytest.raises(CramError, match="matches no file"):
        prepare.run(dataset=str(tmp_path / "*.parquet"), out_dir=out)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(CramError, match="x.csv is not a"):
        prepare.run(dataset=str(tmp_path / "x.csv"), out_dir=out)
    for bs in (1, 70000):
        with pytest.raises(CramError, match="--block_size"):
            prepare.run(dataset=src, out_dir=out, block_size=bs)
    with pytest.raises(CramError, match="--order=random"):
        prepare.run(dataset=src, out_dir=out, order="random")
    with pytest.raises(CramError, match="unknown tiktoken encoding"):
        prepare.run(dataset=src, out_dir=out, tokenizer="nonesuch")
    with pytest.raises(CramError, match=r"no training block left: read 60 documents, dropped 60 shorter than --min_chars"):
        prepare.run(dataset=src, out_dir=out, min_chars=10_000)
    with pytest.raises(CramError, match=r"dropped 0 shorter .* 60 above --max_tokens_per_char=0.01"):
        prepare.run(dataset=src, out_dir=out, max_tokens_per_char=0.01)
    assert not os.path.exists(os.path.join(out, "train.bin"))
    prepare.run(dataset=src, out_dir=out)
    with pytest.raises(CramError, match="already holds a prepared corpus: pass --force=True"):
        prepare.run(dataset=src, out_dir=out)
    outputs = ("meta.json", "token_counts.npy", "train.bin", "val.bin")
    before = {name: open(os.path.join(out, name), "rb").read() for name in outputs}
    with pytest.raises(CramError, match="no training block left"):  # a failed replacement loses nothing
        prepare.run(dataset=src, out_dir=out, force=True, min_chars=10_000)
    assert before == {name: open(os.path.join(out, name), "rb").read() for name in before}
    assert sorted(os.listdir(out)) == list(outputs)
    assert prepare.run(dataset=src, out_dir=out, force=True, block_size=16)["block_size"] == 16


@pytest.mark.parametrize("where", ["_flush", "_reorder"])
def test_interrupted_run_leaves_no_outputs(tmp_path, corpus, monkeypatch, where):
    _, src = corpus
    out = tmp_path / "o"

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(*(prepare._Packer, "_flush") if where == "_flush" else (prepare, "_reorder"), boom)
    with pytest.raises(KeyboardInterrupt):
        prepare.run(dataset=src, out_dir=str(out))
    assert sorted(os.listdir(out)) == []  # no train.bin, no meta.json, no half-written .tmp


def cli(*args, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "prepare.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)


def test_unreachable_hub_dataset_is_a_clear_error(tmp_path):
    r = cli("--dataset=wikimedia/wikipedia:20231101.en", f"--out_dir={tmp_path / 'o'}",
            env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "wikimedia/wikipedia:20231101.en is no local path and the Hugging Face hub could not load it" in r.stderr
    assert "--dataset=path/to/*.txt" in r.stderr and "HF_DATASETS_OFFLINE" in r.stderr
    assert not os.path.exists(tmp_path / "o")


@pytest.mark.skipif(not os.path.isdir(SHARED_TEXT), reason="../shared/text is not here")
def test_cli_on_real_text(tmp_path):
    out = tmp_path / "shared_text"
    r = cli(f"--dataset={SHARED_TEXT}", f"--out_dir={out}", "--split_paragraphs=True")
    assert r.returncode == 0, r.stderr
    assert "MB/s" in r.stdout and "dropped" in r.stdout
    meta, train, val = load(str(out))
    n = meta["counts"]
    assert n["files"] == 11 and n["docs_read"] > 20_000 and n["bytes"] > 6e6
    assert 0 < n["docs_filtered"] < 0.05 * n["docs_read"] and n["docs_duplicate"] < 100
    assert 1.2e6 < n["tokens"] < 1.7e6 and len(train) > 9000 and 10 <= len(val) <= meta["options"]["max_val_blocks"]
    assert train.max() < meta["vocab_size"] and meta["mb_per_s"] > 0
    sep = (train == prepare.Tokenizer().sep_id).sum()
    assert 0.5 * n["docs_read"] < sep < n["docs_read"]  # one [SEP] per document boundary


def test_missing_tokenizer_files_offline_say_how_to_fix(monkeypatch):
    import requests
    import tiktoken

    def offline(name):  # what tiktoken raises on its first download with no network
        raise requests.exceptions.ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(CramError, match="TIKTOKEN_CACHE_DIR"):
        prepare.Tokenizer("gpt2")


def test_unigram_entropy_in_meta_matches_the_token_counts(tmp_path, corpus):
    out = str(tmp_path / "o")
    prepare.run(dataset=corpus[1], out_dir=out, order="none")
    meta, train, _ = load(out)
    ids = train.ravel()
    counts = np.bincount(ids[ids < meta["bpe_vocab_size"]])
    p = counts[counts > 0] / counts.sum()
    assert meta["unigram_entropy"] == pytest.approx(-(p * np.log(p)).sum(), abs=1e-3)
    # token_counts.npy: every id's count in train.bin, [CLS] and [SEP] included (train.py leaves ids at 0 out)
    recorded = prepare.read_token_counts(out, meta["vocab_size"])
    assert recorded.shape == (meta["vocab_size"],)
    assert np.array_equal(recorded, np.bincount(ids, minlength=meta["vocab_size"]))
    assert recorded[meta["special_ids"]["[MASK]"]] == 0 and recorded[meta["special_ids"]["[CLS]"]] == len(train)
    os.remove(os.path.join(out, "token_counts.npy"))
    with pytest.raises(CramError, match="token_counts.npy is missing or unreadable .*--force=True"):
        prepare.read_token_counts(out, meta["vocab_size"])


def test_a_cut_vocabulary_is_gpt2s_first_merges_and_travels_in_meta(tmp_path, corpus, tok):
    cut = prepare.Tokenizer("gpt2:1024")
    text = "The Second World War ended in 1945; photosynthesis is remarkable, unquestionably. Caf\u00e9 \u2603"
    ids = cut.encode(text)
    assert max(ids) < 1024 and cut.decode(ids) == text and len(ids) > len(tok.encode(text))
    assert cut.n_bpe == 1024 and cut.vocab_size == 1088 and cut.mask_id == 1026
    # tokens gpt2 has below the cut are the same ids: the cut only stops merging
    assert [i for i in tok.encode(" the and of") if i < 1024] == cut.encode(" the and of")
    out = str(tmp_path / "cut")
    meta = prepare.run(dataset=corpus[1], out_dir=out, order="none", tokenizer="gpt2:1024", max_tokens_per_char=0)
    _, train, _ = load(out)
    assert meta["tokenizer"] == "gpt2:1024" and meta["vocab_size"] == 1088 and train.max() < 1088
    again = prepare.Tokenizer.from_meta(meta)  # what train.py, finetune_glue.py and fill_mask.py build
    assert again.name == "gpt2:1024" and pieces(again, train)[0] == corpus[0][0]
    for bad in ("gpt2:256", "gpt2:8k", "gpt2:60000"):
        with pytest.raises(CramError, match=rf"--tokenizer={bad}: cut gpt2 at a whole number of ranks in \(256, 50256\]"):
            prepare.Tokenizer(bad)
