"""Derived model files are cached by content: a fresh environment or process reuses them, and no
process leaves a temporary copy behind."""

from __future__ import annotations

import shutil

import pytest

from synthvlm_data.models import text, tiny


def test_dequantized_gguf_entry_is_keyed_by_bytes_not_by_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHVLM_CACHE", str(tmp_path / "cache"))
    a = tmp_path / "env-a" / "model.Q4_1.gguf"
    a.parent.mkdir()
    a.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    b = tmp_path / "env-b" / "model.Q4_1.gguf"  # the same file installed into another environment
    b.parent.mkdir()
    shutil.copy(a, b)
    assert text._dequantized_dir(a) == text._dequantized_dir(b)
    assert text._dequantized_dir(a).parent == tmp_path / "cache" / "gguf"
    b.write_bytes(a.read_bytes()[:-1] + b"\x00")  # other bytes: another entry
    assert text._dequantized_dir(a) != text._dequantized_dir(b)


def test_clip_tokenizer_folder_is_written_once_and_leaves_no_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHVLM_CACHE", str(tmp_path))
    tiny.clip_tokenizer_dir.cache_clear()
    try:
        first = tiny.clip_tokenizer_dir()
        tiny.clip_tokenizer_dir.cache_clear()  # a second process
        second = tiny.clip_tokenizer_dir()
        assert first == second
        assert [p.name for p in (tmp_path / "clip-tokenizer").iterdir()] == [p.split("/")[-1] for p in [first]]
        import open_clip

        sentence = "a small red triangle left of a large blue circle"
        ids = tiny.clip_tokenizer()(sentence)["input_ids"]
        assert ids == [i for i in open_clip.get_tokenizer("ViT-B-32")([sentence])[0].tolist() if i != 0]
    finally:
        tiny.clip_tokenizer_dir.cache_clear()


def test_clip_tokenizer_never_replaces_a_folder_it_did_not_complete(tmp_path, monkeypatch):
    """Something else at the cache path (not the package's complete copy) is left as it is, and the
    error names it."""
    from synthvlm_data.errors import ModelUnavailableError

    monkeypatch.setenv("SYNTHVLM_CACHE", str(tmp_path))
    tiny.clip_tokenizer_dir.cache_clear()
    try:
        first = tiny.clip_tokenizer_dir()
        shutil.rmtree(first)
        import pathlib

        keep = pathlib.Path(first) / "notes.txt"
        keep.parent.mkdir()
        keep.write_text("mine")
        tiny.clip_tokenizer_dir.cache_clear()
        with pytest.raises(ModelUnavailableError, match="holds no merges.txt"):
            tiny.clip_tokenizer_dir()
        assert keep.read_text() == "mine" and [p.name for p in keep.parent.iterdir()] == ["notes.txt"]
        assert [p.name for p in (tmp_path / "clip-tokenizer").iterdir()] == [keep.parent.name]  # no temp left
    finally:
        tiny.clip_tokenizer_dir.cache_clear()
