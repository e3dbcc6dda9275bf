"""Data for the language-model pretraining task: corpora, tokenizers, packing, sharded sampling.

The default corpus needs no download: the ``.py`` sources of the running interpreter's standard
library. User corpora are a directory of text files, one text file, or a Parquet file with a text
column. Text is tokenized (byte-level by default, or a BPE trained on the train split), cached as
numpy token arrays, and packed into fixed-length sequences of ``seq_len + 1`` tokens (inputs and
shifted targets). :class:`ShardedBatchSampler` walks them in a seeded order with a resumable
position and gives each ``(rank, world_size)`` disjoint sequences.

Splits
------
* Directory corpora (the standard library included): a file goes to ``validation`` if
  ``sha256(relative posix path) mod 100 < 5``, to ``test`` if it is in ``[5, 10)``, else to
  ``train``. The split of a file never depends on which other files exist.
* Parquet: the same rule on the sha256 of each row's text (duplicated rows land in one split).
* One text file: contiguous 90 % / 5 % / 5 % by characters (train, validation, test).

Example
-------
>>> data = load_lm_data(None)                      # standard-library corpus, byte tokenizer
>>> train = PackedSequences(data.splits["train"], seq_len=128)
>>> sampler = ShardedBatchSampler(len(train), batch_size=16, seed=0)
>>> batch = train.get(sampler.next_indices())       # int64 array (16, 129)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
EOS_TOKEN = "<|endoftext|>"
# folders of the standard library that are test suites or IDE code, not library source
STDLIB_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib"})
# bump when the split rule or the cache layout changes, so stale caches are never reused
_FORMAT_VERSION = 1


def split_of(key: str) -> str:
    """Deterministic split of a document key: sha256 mod 100, <5 validation, 5-9 test, else train."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 100
    if bucket < 5:
        return "validation"
    if bucket < 10:
        return "test"
    return "train"


def default_cache_dir() -> Path:
    """``$ADALRS_RAY_CACHE`` if set, else ``~/.cache/adalrs_ray``."""
    env = os.environ.get("ADALRS_RAY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "adalrs_ray"


# --------------------------------------------------------------------------------------------
# corpora
# --------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Raw text of one corpus, split into train/validation/test documents.

    ``fingerprint`` identifies the source cheaply (paths, sizes, modification times; or the
    Parquet file's size and mtime plus the column name) and keys every cache built from it.
    ``documents`` is filled lazily by :meth:`load`, so a fully cached corpus is never read.
    """

    source: str
    fingerprint: str
    _loader: Any = field(repr=False)
    _documents: dict[str, list[str]] | None = field(default=None, repr=False)

    def load(self) -> dict[str, list[str]]:
        if self._documents is None:
            self._documents = self._loader()
            counts = {s: len(self._documents[s]) for s in SPLITS}
            logger.info("corpus %s: documents per split %s", self.source, counts)
        return self._documents


def stdlib_root() -> Path:
    """Root of the running interpreter's standard library (``sysconfig`` ``stdlib`` path)."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The ``.py`` files of the standard library, without site-packages, test suites, idlelib."""
    root = stdlib_root() if root is None else root
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(part in STDLIB_EXCLUDED_DIRS for part in rel.parts[:-1]):
            continue
        if path.is_file():
            files.append(path)
    return sorted(files)


def _stat_fingerprint(kind: str, root: Path, files: Sequence[Path], extra: str = "") -> str:
    h = hashlib.sha256(f"v{_FORMAT_VERSION}|{kind}|{extra}".encode())
    for path in files:
        st = path.stat()
        rel = path.relative_to(root).as_posix() if path != root else path.name
        h.update(f"|{rel}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def _split_files(root: Path, files: Sequence[Path], what: str) -> dict[str, list[str]]:
    docs: dict[str, list[str]] = {s: [] for s in SPLITS}
    skipped = 0
    for path in files:
        text = _read_text(path)
        if text is None:
            skipped += 1
            continue
        if text:
            docs[split_of(path.relative_to(root).as_posix())].append(text)
    if skipped:
        logger.warning("%s: skipped %d files that are not UTF-8 text", what, skipped)
    _check_splits(docs, what)
    return docs


def _check_splits(docs: dict[str, list[str]], what: str) -> None:
    n = sum(len(v) for v in docs.values())
    if n == 0:
        raise ValueError(f"data {what!r} holds no non-empty UTF-8 text documents")
    for split in SPLITS:
        if not docs[split]:
            raise ValueError(
                f"data {what!r}: the deterministic sha256 split of its {n} documents left the "
                f"{split!r} split empty (about 5% of documents go to validation and 5% to test); "
                "give more documents, or one text file (split 90/5/5 by characters)"
            )


def stdlib_corpus() -> Corpus:
    """The default corpus: the standard library's ``.py`` sources (see module docstring)."""
    root = stdlib_root()
    files = stdlib_files(root)
    if not files:
        raise ValueError(f"no .py files found in the standard library at {str(root)!r}")
    fp = _stat_fingerprint("stdlib", root, files, extra=sys.version)
    return Corpus(f"stdlib:{root}", fp, lambda: _split_files(root, files, f"stdlib at {root}"))


def directory_corpus(root: Path) -> Corpus:
    """Every non-hidden regular file under ``root`` (recursively) is one document."""
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise ValueError(f"data directory {str(root)!r} contains no files")
    fp = _stat_fingerprint("dir", root, files)
    return Corpus(str(root), fp, lambda: _split_files(root, files, str(root)))


def text_file_corpus(path: Path) -> Corpus:
    """One text file, split 90/5/5 by characters into train/validation/test."""
    if path.stat().st_size == 0:
        raise ValueError(f"data file {str(path)!r} is empty")

    def load() -> dict[str, list[str]]:
        text = _read_text(path)
        if text is None:
            raise ValueError(f"data file {str(path)!r} is not UTF-8 text")
        n = len(text)
        a, b = int(n * 0.90), int(n * 0.95)
        docs = {"train": [text[:a]], "validation": [text[a:b]], "test": [text[b:]]}
        for split, parts in docs.items():
            if not parts[0]:
                raise ValueError(
                    f"data file {str(path)!r} ({n} characters) is too short to split: "
                    f"the {split!r} part is empty"
                )
        return docs

    return Corpus(str(path), _stat_fingerprint("file", path.parent, [path]), load)


def parquet_corpus(path: Path, text_column: str) -> Corpus:
    """One document per non-null, non-empty row of ``text_column``; split by sha256 of the text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"cannot read Parquet file {str(path)!r}: {exc}") from exc
    if text_column not in schema.names:
        raise ValueError(
            f"text column {text_column!r} not found in Parquet file {str(path)!r}; "
            f"its columns are {schema.names}"
        )
    if not (
        pa.types.is_string(schema.field(text_column).type)
        or pa.types.is_large_string(schema.field(text_column).type)
    ):
        raise ValueError(
            f"column {text_column!r} of {str(path)!r} has type {schema.field(text_column).type}, "
            "but must be a string column"
        )

    def load() -> dict[str, list[str]]:
        try:
            column = pq.read_table(path, columns=[text_column]).column(text_column)
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"cannot read Parquet file {str(path)!r}: {exc}") from exc
        docs: dict[str, list[str]] = {s: [] for s in SPLITS}
        for text in column.to_pylist():
            if text:
                docs[split_of(text)].append(text)
        _check_splits(docs, f"{path}[{text_column}]")
        return docs

    return Corpus(
        f"{path}[{text_column}]",
        _stat_fingerprint("parquet", path.parent, [path], extra=text_column),
        load,
    )


def open_corpus(path: str | os.PathLike | None, text_column: str = "text") -> Corpus:
    """Pick the corpus reader for ``path``: None (standard library), a directory, ``.parquet``, text."""
    if path is None or str(path) == "":
        return stdlib_corpus()
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"data path {str(p)!r} does not exist")
    if p.is_dir():
        return directory_corpus(p)
    if p.suffix.lower() in (".parquet", ".pq"):
        return parquet_corpus(p, text_column)
    return text_file_corpus(p)


# --------------------------------------------------------------------------------------------
# tokenizers
# --------------------------------------------------------------------------------------------


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_id: int

    def encode_documents(self, docs: Iterable[str]) -> np.ndarray: ...
    def decode(self, ids: Sequence[int]) -> str: ...


def _token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, plus an end-of-document token 256 (vocab 257)."""

    name = "byte"
    vocab_size = 257
    eos_id = 256

    def encode_documents(self, docs: Iterable[str]) -> np.ndarray:
        parts = []
        eos = np.array([self.eos_id], dtype=np.uint16)
        for text in docs:
            parts.append(np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16))
            parts.append(eos)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")


class BPETokenizer:
    """A byte-level BPE (``tokenizers``) trained on the train split; EOS is ``<|endoftext|>``."""

    def __init__(self, tok: Any):
        self._tok = tok
        self.name = f"bpe{tok.get_vocab_size()}"
        self.vocab_size = tok.get_vocab_size()
        eos = tok.token_to_id(EOS_TOKEN)
        if eos is None:
            raise ValueError(f"BPE tokenizer has no {EOS_TOKEN!r} token")
        self.eos_id = eos

    @classmethod
    def train(cls, docs: Sequence[str], vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
        return cls(tok)

    @classmethod
    def from_file(cls, path: Path) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_file(str(path)))

    def save(self, path: Path) -> None:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        self._tok.save(str(tmp))
        os.replace(tmp, path)

    def encode_documents(self, docs: Iterable[str]) -> np.ndarray:
        dtype = _token_dtype(self.vocab_size)
        parts = []
        eos = np.array([self.eos_id], dtype=dtype)
        batch: list[str] = []

        def flush() -> None:
            for enc in self._tok.encode_batch(batch):
                parts.append(np.asarray(enc.ids, dtype=dtype))
                parts.append(eos)
            batch.clear()

        for text in docs:
            batch.append(text)
            if len(batch) >= 256:
                flush()
        flush()
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids])


# --------------------------------------------------------------------------------------------
# tokenized, cached data
# --------------------------------------------------------------------------------------------


@dataclass
class LMData:
    """Token arrays per split (memory-mapped from the cache) and the tokenizer that made them."""

    source: str
    fingerprint: str
    tokenizer: Any
    splits: dict[str, np.ndarray]

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size)

    def num_tokens(self, split: str) -> int:
        return int(self.splits[split].shape[0])


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def load_lm_data(
    path: str | os.PathLike | None = None,
    *,
    text_column: str = "text",
    tokenizer: str = "byte",
    bpe_vocab_size: int = 4096,
    cache_dir: str | os.PathLike | None = None,
) -> LMData:
    """Open a corpus, tokenize each split once, cache the token arrays, return them mmapped.

    ``tokenizer`` is ``"byte"`` or ``"bpe"``; a BPE is trained on the train split with
    ``bpe_vocab_size`` tokens and cached under ``cache_dir`` keyed by corpus fingerprint and vocab.
    """
    if tokenizer not in ("byte", "bpe"):
        raise ValueError(f"tokenizer is {tokenizer!r}, but must be 'byte' or 'bpe'")
    if tokenizer == "bpe" and not 256 + 1 < bpe_vocab_size <= 1 << 20:
        raise ValueError(
            f"bpe_vocab_size is {bpe_vocab_size}, but must be in (257, 1048576] "
            "(the 256 byte symbols and the end-of-document token come first)"
        )
    corpus = open_corpus(path, text_column)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = corpus.fingerprint[:20]

    tok: Any
    if tokenizer == "byte":
        tok = ByteTokenizer()
    else:
        tok_path = cache / f"bpe-{key}-{bpe_vocab_size}.json"
        if tok_path.exists():
            tok = BPETokenizer.from_file(tok_path)
        else:
            logger.info(
                "training a %d-token BPE on the train split of %s", bpe_vocab_size, corpus.source
            )
            tok = BPETokenizer.train(corpus.load()["train"], bpe_vocab_size)
            tok.save(tok_path)
            logger.info("BPE tokenizer cached at %s (vocab %d)", tok_path, tok.vocab_size)

    splits = {}
    for split in SPLITS:
        npy = cache / f"tokens-{key}-{tok.name}-{split}.npy"
        if not npy.exists():
            arr = tok.encode_documents(corpus.load()[split])
            _atomic_save_npy(npy, arr)
            meta = {
                "source": corpus.source,
                "split": split,
                "tokenizer": tok.name,
                "tokens": len(arr),
            }
            npy.with_suffix(".json").write_text(json.dumps(meta))
        splits[split] = np.load(npy, mmap_mode="r")
    logger.info(
        "data %s: tokens per split %s (tokenizer %s, vocab %d)",
        corpus.source,
        {s: int(a.shape[0]) for s, a in splits.items()},
        tok.name,
        tok.vocab_size,
    )
    return LMData(corpus.source, corpus.fingerprint, tok, splits)


# --------------------------------------------------------------------------------------------
# packing and sampling
# --------------------------------------------------------------------------------------------


class PackedSequences:
    """A token stream viewed as sequences of ``seq_len + 1`` tokens with stride ``seq_len``.

    Sequence ``i`` is ``tokens[i*seq_len : i*seq_len + seq_len + 1]``: its first ``seq_len``
    tokens are inputs, its last ``seq_len`` the shifted targets, so no target token is wasted.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, split: str = "train"):
        if seq_len < 1:
            raise ValueError(f"seq_len is {seq_len}, but must be >= 1")
        self.tokens = tokens
        self.seq_len = seq_len
        self.split = split
        self._n = max(0, (int(tokens.shape[0]) - 1) // seq_len)

    def __len__(self) -> int:
        return self._n

    def get(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Sequences at ``indices`` as an int64 array of shape ``(len(indices), seq_len + 1)``."""
        idx = np.asarray(indices, dtype=np.int64)
        offsets = idx[:, None] * self.seq_len + np.arange(self.seq_len + 1, dtype=np.int64)
        return np.asarray(self.tokens[offsets], dtype=np.int64)


class ShardedBatchSampler:
    """Seeded, resumable, rank-sharded batches of sequence indices.

    Each epoch is a permutation of ``range(num_sequences)`` drawn from
    ``numpy.random.default_rng([seed, epoch])``. A *global batch* is ``batch_size * world_size``
    consecutive entries of it; rank ``r`` takes the ``r``-th slice of ``batch_size``, so ranks read
    disjoint sequences. The state is ``(epoch, position, seed)`` with ``position`` the number of
    global batches consumed in this epoch; it does not depend on the rank, so every rank saves
    the same state. An incomplete last global batch is dropped.
    """

    STATE_VERSION = 1

    def __init__(
        self,
        num_sequences: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size is {batch_size}, but must be >= 1")
        if world_size < 1:
            raise ValueError(f"world_size is {world_size}, but must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank is {rank}, but must be in [0, world_size={world_size})")
        self.global_batch = batch_size * world_size
        if num_sequences < self.global_batch:
            raise ValueError(
                f"the split has {num_sequences} sequences, fewer than one global batch of "
                f"batch_size*world_size = {batch_size}*{world_size}; use more data, a smaller "
                "batch or a shorter seq_len"
            )
        self.num_sequences = num_sequences
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = int(seed)
        self.epoch = 0
        self.position = 0
        self._perm: np.ndarray | None = None
        self._perm_epoch = -1

    @property
    def batches_per_epoch(self) -> int:
        return self.num_sequences // self.global_batch

    def _permutation(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._perm = rng.permutation(self.num_sequences)
            self._perm_epoch = self.epoch
        assert self._perm is not None
        return self._perm

    def next_indices(self) -> np.ndarray:
        """Indices of this rank's next batch; advances the position (and the epoch at its end)."""
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
        start = self.position * self.global_batch + self.rank * self.batch_size
        idx = self._permutation()[start : start + self.batch_size].copy()
        self.position += 1
        return idx

    def state_dict(self) -> dict[str, int]:
        return {
            "version": self.STATE_VERSION,
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("version", "epoch", "position", "seed"):
            if key not in state:
                raise ValueError(f"sampler state has no {key!r} key: {sorted(state)}")
        if state["version"] != self.STATE_VERSION:
            raise ValueError(
                f"sampler state version is {state['version']}, but this code reads version "
                f"{self.STATE_VERSION}"
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.seed = int(state["seed"])
        self._perm_epoch = -1


def eval_batches(
    num_sequences: int, batch_size: int, max_batches: int, *, rank: int = 0, world_size: int = 1
) -> list[np.ndarray]:
    """The fixed evaluation batches of one rank: the first sequences of a split, in order.

    Up to ``max_batches`` global batches (each ``batch_size`` sequences per rank) are used, fewer
    if the split is smaller; a last partial batch is kept when there is only one rank. Every
    rank gets the same number of batches, so a mean of per-rank means is the global mean.
    """
    if max_batches < 1:
        raise ValueError(f"eval_batches is {max_batches}, but must be >= 1")
    if world_size == 1:
        n = min(num_sequences, batch_size * max_batches)
        return [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    per_global = batch_size * world_size
    n_global = min(max_batches, num_sequences // per_global)
    if n_global == 0:  # tiny split: one smaller batch per rank
        per_rank = num_sequences // world_size
        if per_rank == 0:
            return []
        return [np.arange(rank * per_rank, (rank + 1) * per_rank)]
    return [
        np.arange(g * per_global + rank * batch_size, g * per_global + (rank + 1) * batch_size)
        for g in range(n_global)
    ]
