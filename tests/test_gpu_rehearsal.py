"""bench/gpu_rehearsal.py at toy size on the CPU: every section runs through the package's code path."""

from __future__ import annotations

import json


def test_gpu_rehearsal_toy_runs_every_section(tmp_path, capsys):
    from bench.gpu_rehearsal import main, peak_tflops

    out = tmp_path / "r.json"
    assert main(["--toy", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["errors"] == {} and result["device"]["toy"] is True
    rows = result["rows"]
    sdxl = [r for r in rows if r["section"] == "sdxl"]
    assert [r["batch"] for r in sdxl] == [1, 2] and all(r["s_per_image"] > 0 and r["flops_per_image"] > 0 for r in sdxl)
    assert sdxl[0]["base_steps"] == 3  # 4 steps, the tiny recipe's high_noise_frac 0.8: base 3, refiner 1
    assert [r["images_per_s"] > 0 for r in rows if r["section"] == "clip"] == [True]
    llava = {r["variant"]: r for r in rows if r["section"] == "llava"}
    assert llava["7B pretrain (toy)"]["trainable"] < llava["7B finetune (toy)"]["trainable"]
    assert "| sdxl | eager | 1 |" in capsys.readouterr().out
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.4 and peak_tflops("NVIDIA H100 PCIe") == 756.0
