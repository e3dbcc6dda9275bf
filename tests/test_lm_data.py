"""Data of the LM task: corpora, splits, tokenizers, caches, packing, sharded resumable sampling."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from train_loops import data as D


def _write_docs(root, n=120, prefix="doc"):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"{prefix}{i:03d}.txt").write_text(f"document {i}: " + "hello world " * (5 + i % 7))
    return root


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


def _mkdir(path):
    path.mkdir()
    return path


def _mkdir_with(path, content: bytes):
    _write(_mkdir(path) / "a.txt", content)
    return path


def test_split_of_is_deterministic_with_the_documented_proportions():
    keys = [f"pkg/module_{i}.py" for i in range(20000)]
    splits = [D.split_of(k) for k in keys]
    assert splits == [D.split_of(k) for k in keys]
    frac = {s: splits.count(s) / len(splits) for s in D.SPLITS}
    assert abs(frac["validation"] - 0.05) < 0.01
    assert abs(frac["test"] - 0.05) < 0.01


def test_stdlib_files_exclude_tests_site_packages_and_idlelib():
    root = D.stdlib_root()
    files = D.stdlib_files(root)
    assert len(files) > 100
    rels = [f.relative_to(root).parts for f in files]
    assert not any(set(parts[:-1]) & D.STDLIB_EXCLUDED_DIRS for parts in rels)
    assert any(parts == ("os.py",) for parts in rels)


def test_stdlib_corpus_has_three_nonempty_splits():
    docs = D.stdlib_corpus().load()
    assert all(len(docs[s]) > 0 for s in D.SPLITS)
    assert len(docs["train"]) > 10 * len(docs["validation"])


def test_directory_corpus_is_tokenized_cached_and_reloaded(tmp_path):
    root = _write_docs(tmp_path / "corpus")
    a = D.load_lm_data(root, cache_dir=tmp_path / "cache")
    cached = sorted(p.name for p in (tmp_path / "cache").glob("*.npy"))
    assert len(cached) == 3
    b = D.load_lm_data(root, cache_dir=tmp_path / "cache")
    for s in D.SPLITS:
        assert a.num_tokens(s) > 0
        np.testing.assert_array_equal(np.asarray(a.splits[s]), np.asarray(b.splits[s]))
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.npy")) == cached
    # every document ends with the end-of-document token
    total_docs = 120
    eos = sum(int((np.asarray(a.splits[s]) == a.tokenizer.eos_id).sum()) for s in D.SPLITS)
    assert eos == total_docs


def test_changing_a_file_invalidates_the_cache(tmp_path):
    root = _write_docs(tmp_path / "corpus")
    a = D.load_lm_data(root, cache_dir=tmp_path / "cache")
    (root / "doc000.txt").write_text("a much longer replacement text " * 50)
    b = D.load_lm_data(root, cache_dir=tmp_path / "cache")
    assert a.fingerprint != b.fingerprint
    assert sum(b.num_tokens(s) for s in D.SPLITS) > sum(a.num_tokens(s) for s in D.SPLITS)


def test_one_text_file_is_split_90_5_5(tmp_path):
    f = tmp_path / "book.txt"
    f.write_text("".join(f"line {i}\n" for i in range(1000)))
    d = D.load_lm_data(f, cache_dir=tmp_path / "cache")
    n = {s: d.num_tokens(s) - 1 for s in D.SPLITS}  # minus the end-of-document token
    total = sum(n.values())
    assert n["train"] == int(total * 0.9)
    assert abs(n["validation"] - total * 0.05) <= 1


def test_parquet_text_column(tmp_path):
    path = tmp_path / "c.parquet"
    texts = [f"row {i} " + "abc " * (i % 9 + 1) for i in range(300)]
    pq.write_table(pa.table({"body": texts, "id": list(range(300))}), path)
    d = D.load_lm_data(path, text_column="body", cache_dir=tmp_path / "cache")
    assert all(d.num_tokens(s) > 0 for s in D.SPLITS)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: _mkdir(p / "empty_dir"), "contains no files"),
        (lambda p: _write(p / "empty.txt", b""), "is empty"),
        (lambda p: _write(p / "short.txt", b"ab"), "too short"),
        (lambda p: _write(p / "bin.txt", b"\xff\xfe\x00\x81" * 10), "UTF-8"),
        (lambda p: _mkdir_with(p / "few", b"hi"), "too short to split 90/5/5"),
        (lambda p: _write(p / "bad.parquet", b"not parquet"), "cannot read Parquet"),
    ],
)
def test_bad_data_paths_raise_a_clear_value_error(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=match) as info:
        D.load_lm_data(path, cache_dir=tmp_path / "cache")
    assert str(path.name) in str(info.value)


def test_parquet_missing_column_names_the_column_and_the_columns(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": ["x"] * 10}), path)
    with pytest.raises(ValueError, match=r"'text' not found .*\['body'\]"):
        D.load_lm_data(path, cache_dir=tmp_path / "cache")


def test_parquet_non_string_column_is_rejected(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": list(range(10))}), path)
    with pytest.raises(ValueError, match="must be a string column"):
        D.load_lm_data(path, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tokenizer": "wordpiece"}, "tokenizer is 'wordpiece'"),
        ({"tokenizer": "bpe", "bpe_vocab_size": 100}, "bpe_vocab_size is 100"),
    ],
)
def test_bad_tokenizer_options_raise(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        D.load_lm_data(_write_docs(tmp_path / "c"), cache_dir=tmp_path / "cache", **kwargs)


def test_byte_tokenizer_round_trips_unicode():
    tok = D.ByteTokenizer()
    ids = tok.encode_documents(["héllo ✓"])
    assert ids[-1] == tok.eos_id and ids.max() == 256
    assert tok.decode(ids) == "héllo ✓"


def test_bpe_is_trained_on_train_split_cached_and_round_trips(tmp_path):
    root = _write_docs(tmp_path / "corpus", n=150)
    d = D.load_lm_data(root, tokenizer="bpe", bpe_vocab_size=300, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("bpe-*-300.json"))) == 1
    assert 257 < d.vocab_size <= 300
    text = "document 7: hello world hello world"
    ids = d.tokenizer.encode_documents([text])
    assert len(ids) < len(text)
    assert d.tokenizer.decode(ids[:-1]) == text
    again = D.load_lm_data(root, tokenizer="bpe", bpe_vocab_size=300, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(again.splits["train"]), np.asarray(d.splits["train"]))


def test_packed_sequences_overlap_by_one_token_for_shifted_targets():
    tokens = np.arange(100, dtype=np.uint16)
    seqs = D.PackedSequences(tokens, seq_len=8)
    assert len(seqs) == 12  # (100 - 1) // 8
    batch = seqs.get([0, 1, 11])
    assert batch.shape == (3, 9) and batch.dtype == np.int64
    assert batch[0, -1] == batch[1, 0]
    assert batch[2, -1] == 96


def test_sampler_is_seeded_and_covers_each_epoch_once():
    s = D.ShardedBatchSampler(40, 4, seed=3)
    epoch0 = np.concatenate([s.next_indices() for _ in range(s.batches_per_epoch)])
    assert sorted(epoch0.tolist()) == list(range(40))
    t = D.ShardedBatchSampler(40, 4, seed=3)
    np.testing.assert_array_equal(epoch0, np.concatenate([t.next_indices() for _ in range(10)]))
    epoch1 = np.concatenate([s.next_indices() for _ in range(10)])
    assert s.epoch == 1 and not np.array_equal(epoch0, epoch1)


def test_sampler_state_dict_resumes_the_same_stream():
    a = D.ShardedBatchSampler(50, 4, seed=1)
    for _ in range(17):  # crosses an epoch boundary (12 batches per epoch)
        a.next_indices()
    state = a.state_dict()
    assert state == {"version": 1, "epoch": 1, "position": 5, "seed": 1}
    b = D.ShardedBatchSampler(50, 4, seed=99)
    b.load_state_dict(state)
    for _ in range(20):
        np.testing.assert_array_equal(a.next_indices(), b.next_indices())


def test_sampler_state_missing_key_raises():
    s = D.ShardedBatchSampler(50, 4)
    with pytest.raises(ValueError, match="'position'"):
        s.load_state_dict({"version": 1, "epoch": 0, "seed": 0})


def test_ranks_read_disjoint_sequences():
    world = 3
    samplers = [
        D.ShardedBatchSampler(100, 4, seed=7, rank=r, world_size=world) for r in range(world)
    ]
    for _ in range(samplers[0].batches_per_epoch):
        batches = [s.next_indices() for s in samplers]
        flat = np.concatenate(batches)
        assert len(set(flat.tolist())) == len(flat) == 12
    assert len({str(s.state_dict()) for s in samplers}) == 1


@pytest.mark.parametrize(
    "args, match",
    [
        ((10, 0), "batch_size is 0"),
        ((10, 4, {"rank": 2, "world_size": 2}), "rank is 2"),
        ((10, 4, {"world_size": 3}), "fewer than one global batch"),
    ],
)
def test_sampler_rejects_bad_arguments(args, match):
    kwargs = args[2] if len(args) > 2 else {}
    with pytest.raises(ValueError, match=match):
        D.ShardedBatchSampler(args[0], args[1], **kwargs)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_batches_give_every_rank_the_same_count_and_disjoint_sequences(world):
    per_rank = [D.eval_batches(50, 4, 5, rank=r, world_size=world) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1
    flat = np.concatenate([np.concatenate(b) for b in per_rank])
    assert len(set(flat.tolist())) == len(flat) and flat.max() < 50
