"""The measurement scripts the docs cite run as typed (small sizes): their tables print and their own
checks hold."""

from __future__ import annotations

import json


def test_bench_image_format_photographs(tmp_path, capsys):
    from bench.bench_image_format import FORMATS, main

    out = tmp_path / "f.json"
    assert main(["--photos-size", "64", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["photos"]["rows"]
    assert [r["format"] for r in rows] == ["png" if f == "png" else f"{f} q{q}" for f, q in FORMATS]
    assert rows[0]["ssim_abs_max"] == 0.0 and all(r["bytes_mean"] > 0 for r in rows)
    assert "scikit-image photographs at 64x64" in capsys.readouterr().out


def test_bench_score_same_bytes_at_two_threads(capsys):
    from bench.bench_score import main

    assert main(["--images", "8"]) == 0  # non-zero when 2 threads give other bytes than 1
    out = capsys.readouterr().out
    assert "same bytes" in out and "bare open_clip + skimage loop" in out
