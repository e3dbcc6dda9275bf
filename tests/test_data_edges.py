"""Corpora at the edges (issue 15): tiny directories, empty, binary and non-UTF-8 files."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from adalrs_ray.cli import main
from train_loops import data as D

FALLBACK = "split 90/5/5 by characters instead"


def _small_dir(root, n=17, chars=400):
    """``n`` text files of about ``chars`` characters, like /usr/share/common-licenses."""
    root.mkdir(parents=True, exist_ok=True)
    names = [f"doc{i}.txt" for i in range(n)]
    assert "validation" not in {D.split_of(name) for name in names}  # so the sha256 split fails
    for i, name in enumerate(names):
        (root / name).write_text(f"license {i}: " + "terms apply. " * (chars // 13))
    return root


def _old_split(root, files):
    """The sha256 split as it was before the fallback: the reference a big corpus must match."""
    docs = {s: [] for s in D.SPLITS}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if text:
            docs[D.split_of(path.relative_to(root).as_posix())].append(text)
    return docs


def _warnings(caplog, text):
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


def test_a_big_directory_keeps_the_sha256_split_of_before(tmp_path):
    root = tmp_path / "big"
    for i in range(150):
        sub = root / f"pkg{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"m{i:03d}.py").write_text(f"x = {i}\n" * (1 + i % 5))
    (root / "crlf.txt").write_bytes(b"line one\r\nline two\rthree\n")
    (root / "blank.txt").write_text("  \n")
    (root / "empty.txt").write_text("")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    docs = D.directory_corpus(root).load()
    assert docs == _old_split(root, files)
    assert all(docs[s] for s in D.SPLITS)


def test_the_stdlib_corpus_keeps_the_sha256_split_of_before():
    root = D.stdlib_root()
    assert D.stdlib_corpus().load() == _old_split(root, D.stdlib_files(root))


def test_a_small_directory_falls_back_to_the_character_split_with_one_warning(tmp_path, caplog):
    root = _small_dir(tmp_path / "licenses")
    caplog.set_level(logging.WARNING, logger="train_loops.data")
    data = D.load_lm_data(root, cache_dir=tmp_path / "cache")
    assert all(data.num_tokens(s) > 0 for s in D.SPLITS)
    (warning,) = _warnings(caplog, FALLBACK)
    assert str(root) in warning.getMessage() and "17 documents" in warning.getMessage()
    # cached: the corpus is not read again, so no second warning
    D.load_lm_data(root, cache_dir=tmp_path / "cache")
    assert len(_warnings(caplog, FALLBACK)) == 1


def test_the_character_split_lays_the_documents_end_to_end_sorted_by_relative_path(tmp_path):
    root = tmp_path / "c"
    (root / "a").mkdir(parents=True)
    texts = {"a/b.txt": "B" * 30, "a-c.txt": "C" * 30, "z.txt": "Z" * 40}
    for rel, text in texts.items():
        (root / rel).write_text(text)
    docs = D.directory_corpus(root).load()
    whole = "".join(texts[k] for k in sorted(texts))  # "a-c.txt" < "a/b.txt" as strings
    assert "".join(docs["train"] + docs["validation"] + docs["test"]) == whole
    assert [len("".join(docs[s])) for s in D.SPLITS] == [90, 5, 5]
    assert docs["train"][:2] == ["C" * 30, "B" * 30]  # whole documents stay whole


def test_a_directory_too_short_for_the_character_split_is_a_clear_error(tmp_path):
    root = tmp_path / "tiny"
    root.mkdir()
    for name in "abc":
        (root / name).write_text("hi")
    with pytest.raises(ValueError, match=r"3 documents, 6 characters.*90/5/5 by characters") as e:
        D.load_lm_data(root, cache_dir=tmp_path / "cache")
    assert str(root) in str(e.value)


def test_empty_files_are_skipped_with_one_warning(tmp_path, caplog):
    root = _small_dir(tmp_path / "c")
    for i in range(5):
        (root / f"empty{i}.txt").write_text("")
    caplog.set_level(logging.WARNING, logger="train_loops.data")
    docs = D.directory_corpus(root).load()
    assert sum(len(docs[s]) for s in D.SPLITS) >= 17
    (warning,) = _warnings(caplog, "empty files")
    assert "skipped 5 empty files: empty0.txt, empty1.txt, empty2.txt, ..." in warning.getMessage()


def test_a_binary_file_is_skipped_with_a_warning(tmp_path, caplog):
    root = _small_dir(tmp_path / "c")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    caplog.set_level(logging.WARNING, logger="train_loops.data")
    docs = D.directory_corpus(root).load()
    assert not any("PNG" in d for s in D.SPLITS for d in docs[s])
    (warning,) = _warnings(caplog, "skipped 1 binary files (a NUL byte in the first 8192 bytes)")
    assert warning.getMessage().endswith(": image.png")


def test_bytes_that_are_not_utf8_become_replacement_characters(tmp_path, caplog):
    root = _small_dir(tmp_path / "c")
    (root / "latin1.txt").write_bytes("café crème ".encode("latin-1") * 40)
    caplog.set_level(logging.WARNING, logger="train_loops.data")
    docs = D.directory_corpus(root).load()
    everything = "".join(d for s in D.SPLITS for d in docs[s])
    assert "caf\ufffd cr\ufffdme" in everything
    (warning,) = _warnings(caplog, "U+FFFD")
    assert "1 files" in warning.getMessage() and "latin1.txt" in warning.getMessage()


@pytest.mark.parametrize(
    "files, match",
    [
        ({"a.bin": b"\x00\x01\x02" * 50, "b.bin": b"ELF\x00" * 10}, r"no usable text.*2 binary"),
        ({"a.txt": b"", "b.txt": b"  \n\t\n"}, r"no usable text.*1 empty"),
    ],
)
def test_a_directory_with_no_usable_text_is_a_clear_error(tmp_path, files, match):
    root = tmp_path / "nothing"
    root.mkdir()
    for name, content in files.items():
        (root / name).write_bytes(content)
    with pytest.raises(ValueError, match=match) as e:
        D.load_lm_data(root, cache_dir=tmp_path / "cache")
    assert str(root) in str(e.value)


def test_one_text_file_with_bytes_that_are_not_utf8_is_read_with_replacements(tmp_path, caplog):
    f = tmp_path / "book.txt"
    f.write_bytes(b"ok \xff\xfe text\n" * 100)
    caplog.set_level(logging.WARNING, logger="train_loops.data")
    docs = D.text_file_corpus(f).load()
    assert "\ufffd" in docs["train"][0]
    assert len(_warnings(caplog, "U+FFFD")) == 1


def test_one_binary_file_is_a_clear_error(tmp_path):
    f = tmp_path / "blob.txt"
    f.write_bytes(b"abc\x00def" * 10)
    with pytest.raises(ValueError, match=r"blob.txt.*looks binary"):
        D.text_file_corpus(f).load()


def test_a_small_parquet_column_falls_back_in_row_order(tmp_path, caplog):
    path = tmp_path / "c.parquet"
    texts = [f"row {i}: " + "words " * 20 for i in range(5)]
    pq.write_table(pa.table({"text": [*texts, None, ""]}), path)
    caplog.set_level(logging.WARNING, logger="train_loops.data")
    docs = D.parquet_corpus(path, "text").load()
    assert "".join(docs["train"] + docs["validation"] + docs["test"]) == "".join(texts)
    assert len(_warnings(caplog, FALLBACK)) == 1
    assert len(_warnings(caplog, "skipped 2 null or empty rows")) == 1


def test_a_parquet_column_of_blanks_is_a_clear_error(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": ["", " ", None]}), path)
    with pytest.raises(ValueError, match=r"c.parquet\[text\].*no usable text"):
        D.parquet_corpus(path, "text").load()


def test_a_small_stdlib_falls_back_too(monkeypatch, caplog):
    few = D.stdlib_files()[:4]
    monkeypatch.setattr(D, "stdlib_files", lambda root=None: few)
    caplog.set_level(logging.WARNING, logger="train_loops.data")
    docs = D.stdlib_corpus().load()
    assert all(docs[s] for s in D.SPLITS)
    (warning,) = _warnings(caplog, FALLBACK)
    assert "stdlib" in warning.getMessage() and "4 documents" in warning.getMessage()


@pytest.fixture
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_cli_trains_on_a_small_directory(tmp_path, _one_thread):
    root = _small_dir(tmp_path / "licenses")
    out = tmp_path / "run"
    argv = ["train", "--data", str(root), "--cache-dir", str(tmp_path / "cache")]
    argv += ["--seq-len", "32", "--batch-size", "4", "--eval-batches", "1", "--steps", "3"]
    argv += ["--device", "cpu", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert (out / "summary.json").exists()
    tokens = [np.load(p) for p in sorted((tmp_path / "cache").glob("tokens-*.npy"))]
    assert len(tokens) == 3 and all(len(t) > 33 for t in tokens)


def test_cli_reports_a_directory_without_text_in_one_line(tmp_path, capsys):
    root = tmp_path / "blobs"
    root.mkdir()
    (root / "a.bin").write_bytes(b"\x00" * 100)
    argv = ["train", "--data", str(root), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the warning that the binary file was skipped
    assert last.startswith("adalrs-ray train: error: data ") and str(root) in last
    assert "no usable text" in last


def test_compare_refuses_a_directory_without_text_before_any_trial(tmp_path, capsys):
    root = tmp_path / "blobs"
    root.mkdir()
    (root / "a.bin").write_bytes(b"\x00" * 100)
    out = tmp_path / "cmp"
    argv = ["compare", "--data", str(root), "--preset", "smoke", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("adalrs-ray compare: error: data ") and "no usable text" in last
    assert not (out / "tune").exists()  # no Ray, no trial
