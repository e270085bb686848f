"""bench/bench_gpu.py, the one script a session lent a GPU runs: its code paths on a CPU at tiny sizes,
so that it still runs when a device is there (the numbers at these sizes measure nothing)."""

import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def bench_gpu(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_gpu

    return bench_gpu


@pytest.mark.slow  # trains 16 small runs and a torchrun job: about 30 s on 2 cores
def test_every_part_runs_on_a_cpu_and_writes_its_tables(bench_gpu, tmp_path, capsys):
    # compile is left out: compiling takes minutes on a busy CPU (tests/test_speed.py has the same rule)
    code = bench_gpu.main(["--device", "cpu", "--tiny", "--parts", "training,log_px,torchrun", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    text = (tmp_path / "gpu.md").read_text()
    assert code == 0, text
    assert "failed" not in text and text.strip() in printed
    raw = json.loads((tmp_path / "gpu.json").read_text())
    cases = {(r["model"], r["batch"], r["dtype"]) for r in raw["training"]}
    assert cases == {(m, b, d) for m in ("large", "small") for b in (128, 1024) for d in ("float32", "bfloat16")}
    for r in raw["training"]:
        assert all(rate > 0 for rate in r["rate"].values()) and all(0 < b < 10 for b in r["bound"].values())
    assert {(r["hidden"], r["latent"]) for r in raw["log_px"]} == {(100, 8), (400, 20)}
    assert (
        raw["torchrun"]["rc"] == 0
        and raw["torchrun"]["epochs"] == 2
        and "model.safetensors" in raw["torchrun"]["files"]
    )
    assert text.count("\n| large 784-400-20 |") == 4 and text.count("\n| small 64-128-8 |") == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no GPU is")
def test_without_cuda_it_says_so_in_one_line(bench_gpu, capsys):
    assert bench_gpu.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no CUDA device" in err
