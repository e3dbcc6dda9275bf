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
* Fallback: when the sha256 rule leaves a split empty (a corpus of fewer than ~40 documents),
  the documents are laid end to end (a directory's sorted by relative posix path, Parquet rows
  in row order) and cut at 90 % and 95 % of the characters, with one warning; a document that
  straddles a cut becomes two documents. Only a corpus too short for that is a ``ValueError``.

Reading files
-------------
Empty files are skipped, and so are binary files (a NUL byte in the first ``BINARY_SNIFF_BYTES``
bytes) and unreadable ones, each kind with one warning that counts and names them. Other bytes
that are not UTF-8 become U+FFFD (``errors="replace"``), with one warning. Newlines are
translated as by ``Path.read_text``. Whitespace-only files stay documents (as before, so the
splits of corpora that worked do not change), but a corpus with nothing else is a ``ValueError``.

Example
-------
>>> data = load_lm_data(None)                      # standard-library corpus, byte tokenizer
>>> train = PackedSequences(data.splits["train"], seq_len=128)
>>> sampler = ShardedBatchSampler(len(train), batch_size=16, seed=0)
>>> batch = train.get(sampler.next_indices())       # int64 array (16, 129)
"""

from __future__ import annotations

import hashlib
import io
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
# a NUL byte in this many leading bytes marks a file as binary (skipped)
BINARY_SNIFF_BYTES = 8192
# bump when the split rule or the cache layout changes, so stale caches are never reused
# (2: bytes that are not UTF-8 become U+FFFD instead of dropping the file; tiny corpora fall back
# to the character split)
_FORMAT_VERSION = 2


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


def _decode_utf8(raw: bytes, errors: str = "strict") -> str:
    """``raw`` as ``Path.read_text(encoding="utf-8")`` would return it (universal newlines)."""
    return io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", errors=errors).read()


def _read_document(path: Path) -> tuple[str | None, str]:
    """Text of one file and how it was read: ``"ok"``, ``"replaced"``, ``"binary"``, ``"unreadable"``.

    A NUL byte in the first ``BINARY_SNIFF_BYTES`` bytes marks a binary file (text ``None``);
    other bytes that are not UTF-8 become U+FFFD.
    """
    try:
        raw = path.read_bytes()
    except OSError:
        return None, "unreadable"
    if b"\x00" in raw[:BINARY_SNIFF_BYTES]:
        return None, "binary"
    try:
        return _decode_utf8(raw), "ok"
    except UnicodeDecodeError:
        return _decode_utf8(raw, errors="replace"), "replaced"


def _names(paths: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f", ... ({len(paths) - limit} more)" if len(paths) > limit else "")


def _read_files(root: Path, files: Sequence[Path], what: str) -> list[tuple[str, str]]:
    """``(relative posix path, text)`` of the usable files, in the order of ``files``.

    Empty files, binary files and unreadable files are skipped, and files with bytes that are not
    UTF-8 are kept with U+FFFD in their place, each with one warning that counts and names them.
    A corpus with no file holding more than whitespace is a ``ValueError``.
    """
    docs: list[tuple[str, str]] = []
    skipped: dict[str, list[str]] = {"empty": [], "binary": [], "unreadable": []}
    replaced: list[str] = []
    for path in files:
        rel = path.relative_to(root).as_posix() if path != root else path.name
        text, how = _read_document(path)
        if text is None:
            skipped[how].append(rel)
        elif not text:
            skipped["empty"].append(rel)
        else:
            docs.append((rel, text))
            if how == "replaced":
                replaced.append(rel)
    reasons = {
        "empty": "empty files",
        "binary": f"binary files (a NUL byte in the first {BINARY_SNIFF_BYTES} bytes)",
        "unreadable": "unreadable files",
    }
    for how, rels in skipped.items():
        if rels:
            logger.warning("%s: skipped %d %s: %s", what, len(rels), reasons[how], _names(rels))
    if replaced:
        logger.warning(
            "%s: %d files hold bytes that are not UTF-8; they were replaced by U+FFFD: %s",
            what,
            len(replaced),
            _names(replaced),
        )
    if not any(text.strip() for _, text in docs):
        counts = [f"{len(rels)} {reasons[how]}" for how, rels in skipped.items() if rels]
        if docs:
            counts.append(f"{len(docs)} whitespace-only files")
        raise ValueError(
            f"data {what!r} holds no usable text: of its {len(files)} files, " + ", ".join(counts)
        )
    return docs


def _split_by_characters(texts: Sequence[str], what: str) -> dict[str, list[str]]:
    """``texts`` laid end to end, cut at 90 % and 95 % of the characters (train/validation/test).

    A document that straddles a cut is split in two pieces; each piece stays a document.
    """
    n = sum(len(t) for t in texts)
    size = f"{n} characters" if len(texts) == 1 else f"{len(texts)} documents, {n} characters"
    bounds = {"train": (0, int(n * 0.90)), "validation": (int(n * 0.90), int(n * 0.95))}
    bounds["test"] = (int(n * 0.95), n)
    for split, (lo, hi) in bounds.items():
        if hi <= lo:
            raise ValueError(
                f"data {what!r} ({size}) is too short to split "
                f"90/5/5 by characters: the {split!r} part is empty"
            )
    docs: dict[str, list[str]] = {s: [] for s in SPLITS}
    offset = 0
    for text in texts:
        for split, (lo, hi) in bounds.items():
            piece = text[max(lo - offset, 0) : max(hi - offset, 0)]
            if piece:
                docs[split].append(piece)
        offset += len(text)
    return docs


def _split_documents(
    keyed: Sequence[tuple[str, str]], what: str, *, sort_fallback: bool
) -> dict[str, list[str]]:
    """The sha256 split of ``(key, text)`` documents; the character split if it leaves one empty.

    Each split keeps the order of ``keyed``. The fallback lays the documents end to end sorted by
    key if ``sort_fallback`` (directories: relative paths), else in the order of ``keyed``.
    """
    docs: dict[str, list[str]] = {s: [] for s in SPLITS}
    for key, text in keyed:
        docs[split_of(key)].append(text)
    empty = [s for s in SPLITS if not docs[s]]
    if not empty:
        return docs
    ordered = sorted(keyed, key=lambda kt: kt[0]) if sort_fallback else keyed
    docs = _split_by_characters([text for _, text in ordered], what)
    logger.warning(
        "%s: the sha256 split of its %d documents would leave the %s split empty, so the "
        "documents are laid end to end (%s) and split 90/5/5 by characters instead",
        what,
        len(keyed),
        " and ".join(repr(s) for s in empty),
        "sorted by relative path" if sort_fallback else "in row order",
    )
    return docs


def _split_files(root: Path, files: Sequence[Path], what: str) -> dict[str, list[str]]:
    return _split_documents(_read_files(root, files, what), what, sort_fallback=True)


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
    """One text file, split 90/5/5 by characters into train/validation/test.

    A binary file (a NUL byte in its first ``BINARY_SNIFF_BYTES`` bytes) is a ``ValueError``;
    other bytes that are not UTF-8 become U+FFFD, with a warning.
    """
    if path.stat().st_size == 0:
        raise ValueError(f"data file {str(path)!r} is empty")

    def load() -> dict[str, list[str]]:
        text, how = _read_document(path)
        if how == "binary":
            raise ValueError(
                f"data file {str(path)!r} looks binary (a NUL byte in its first "
                f"{BINARY_SNIFF_BYTES} bytes), not UTF-8 text"
            )
        if text is None:
            raise ValueError(f"data file {str(path)!r} cannot be read")
        if how == "replaced":
            logger.warning("%s: bytes that are not UTF-8 were replaced by U+FFFD", path)
        return _split_by_characters([text], str(path))

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
        what = f"{path}[{text_column}]"
        rows = column.to_pylist()
        texts = [t for t in rows if t]
        if len(texts) < len(rows):
            logger.warning("%s: skipped %d null or empty rows", what, len(rows) - len(texts))
        if not any(t.strip() for t in texts):
            raise ValueError(
                f"data {what!r} holds no usable text: none of its {len(rows)} rows has more than "
                "whitespace"
            )
        return _split_documents([(t, t) for t in texts], what, sort_fallback=False)

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
