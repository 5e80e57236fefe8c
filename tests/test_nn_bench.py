"""The models benchmark (without torch: the tests never import it) and Numba's on-disk
cache, which lets a second process start without compiling."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from optbench.errors import UsageError
from optbench.nn import bench

ROOT = Path(__file__).resolve().parents[1]


def test_bench_rows_without_torch():
    rows = bench.bench_models([("gru", 8, 6, 5, 3), ("rnn", 4, 3, 2, 1)], repeat=3,
                              with_torch=False)
    assert [(r["model"], r["H"], r["T"], r["B"], r["I"]) for r in rows] == [
        ("gru", 8, 6, 5, 3), ("rnn", 4, 3, 2, 1)]
    for r in rows:
        assert set(r) == set(bench.FIELDS)
        assert r["numba_ms"] > 0 and r["gflops"] > 0 and r["sgemm_gflops"] > 0
        assert r["torch_ms"] is None and r["speedup"] is None
        assert (r["serial_ms"] > 0) if r["threads"] > 1 else r["serial_ms"] is None
        assert r["load"] >= 0
        assert r["compile_s"] >= 0
    assert "gflops" in bench.format_rows(rows).splitlines()[0]


def test_bench_command_line(capsys):
    assert bench.main(["--config", "lstm:4:3:2:2", "--repeat", "1", "--no-torch", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"][0]["model"] == "lstm" and out["start_s"] is None


@pytest.mark.parametrize("text", ["lstm:4:3:2", "conv:4:3:2:2", "lstm:0:3:2:2", "lstm:a:3:2:2"])
def test_bad_configs_are_refused(text, capsys):
    with pytest.raises(UsageError, match="MODEL:H:T:B:I"):
        bench.parse_config(text)
    assert bench.main(["--config", text]) == 2
    assert "MODEL:H:T:B:I" in capsys.readouterr().err


def test_kernels_command_has_a_models_section(capsys):
    from optbench.cli import main

    assert main(["kernels", "--section", "models", "--model", "rnn:4:3:2:1", "--model",
                 "lstm:6:4:5:2", "--repeat", "2", "--no-torch", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "rows" not in report  # no optimizer section
    assert [(r["model"], r["H"]) for r in report["models"]] == [("rnn", 4), ("lstm", 6)]
    assert main(["kernels", "--section", "models", "--model", "rnn:4", "--no-torch"]) == 2
    err = capsys.readouterr().err
    assert "MODEL:H:T:B:I" in err and err.count("\n") == 1


def test_kernels_text_has_the_columns_and_the_start_times(capsys, monkeypatch):
    from optbench.cli import main

    monkeypatch.setattr(bench, "start_times", lambda: {"cold_s": 41.0, "warm_s": [1.25, 1.5]})
    assert main(["kernels", "--section", "models", "--model", "gru:5:3:9:2", "--repeat", "2",
                 "--no-torch", "--start-times"]) == 0
    out = capsys.readouterr().out.splitlines()
    header = out.index(next(line for line in out if "numba_ms" in line))
    for column in ("numba_ms", "serial_ms", "torch_ms", "speedup", "gflops", "sgemm_gflops",
                   "compile_s", "load"):
        assert column in out[header].split()
    assert out[header + 1].split()[:5] == ["gru", "5", "3", "9", "2"]
    assert out[header + 2] == ("fresh process, import + build + one training step (s): "
                               "empty cache (compiles) 41.0, warm cache 1.25, 1.50")


_PROBE = """
import numpy as np
from optbench import nn
from optbench.nn import _bptt, gru, losses
m = nn.build("gru", 2, 8, 3, head="every")
m.loss_and_grad(np.ones((3, 4, 2), np.float32), np.zeros((3, 4), np.int64), loss="xent")
m.predict(np.ones((3, 4, 2), np.float32))
for f in (gru.gru_forward, gru.gru_backward, _bptt.pack_weights, _bptt.weight_grads,
          losses.xent):
    print(f.__name__, sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values()))
"""


@pytest.mark.slow
def test_a_second_process_loads_every_kernel_from_the_disk_cache():
    def probe():
        out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
        return {name: (int(hits), int(misses)) for name, hits, misses in
                (line.split() for line in out.splitlines())}

    probe()  # fills the cache if this checkout has not compiled these kernels yet
    second = probe()
    assert all(hits > 0 and misses == 0 for hits, misses in second.values()), second


_STALE_PROBE = """
import numpy as np
from optbench.nn import losses
dy = np.zeros((1, 2, 1), np.float32)
losses.mse(np.ones((1, 2, 1), np.float32), np.zeros((2, 1, 1), np.float32),
           np.ones((2, 1), np.float32), 2.0, dy)
print(sum(losses.mse.stats.cache_hits.values()), sum(losses.mse.stats.cache_misses.values()))
"""


def test_the_disk_cache_goes_stale_when_another_module_of_nn_changes(tmp_path):
    """Numba stamps a cached kernel with its own file only; optbench.nn._jit.kernel adds
    every module of optbench.nn and the vector layout, so an edit of a callee elsewhere
    (here a comment in _gemm.py, in a copy of the package) recompiles the callers."""
    import shutil

    shutil.copytree(ROOT / "optbench", tmp_path / "optbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": "", "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def probe(**extra):
        out = subprocess.run([sys.executable, "-c", _STALE_PROBE], cwd=tmp_path,
                             env=env | extra, capture_output=True, text=True, check=True)
        return tuple(map(int, out.stdout.split()))

    assert probe() == (0, 1)  # compiled
    assert probe() == (1, 0)  # loaded
    with open(tmp_path / "optbench" / "nn" / "_gemm.py", "a") as f:
        f.write("# an edit\n")
    assert probe() == (0, 1)
    assert probe(OPTBENCH_NN_VECTOR_BYTES="32") == (0, 1)
    assert probe(OPTBENCH_NN_VECTOR_BYTES="32") == (1, 0)


_LAYOUT_PROBE = """
import numpy as np
from optbench import nn
model = nn.build("lstm", 3, 5, 2, seed=1)
x = np.random.default_rng(0).standard_normal((6, 4, 3)).astype(np.float32)
loss, grads, _ = model.loss_and_grad(x, np.ones((6, 2), np.float32))
print(" ".join(repr(float(v)) for v in [loss, *grads]))
"""


@pytest.mark.slow
def test_switching_the_vector_layout_with_one_cache_gives_the_same_gradients(tmp_path):
    """The register tile's code fixes the vector width; a cached copy of it from the other
    layout wrote past its buffers (found in review)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def grads(**extra):
        out = subprocess.run([sys.executable, "-c", _LAYOUT_PROBE], cwd=ROOT, env=env | extra,
                             capture_output=True, text=True, check=True)
        return np.array(out.stdout.split(), float)

    first = grads()
    np.testing.assert_allclose(grads(OPTBENCH_NN_VECTOR_BYTES="32"), first, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(grads(), first)


def test_every_kernel_of_nn_carries_the_package_stamp():
    import importlib
    import pkgutil

    from numba.core.registry import CPUDispatcher

    from optbench import nn
    from optbench.nn import _jit

    found = 0
    for info in pkgutil.iter_modules(nn.__path__):
        module = importlib.import_module(f"optbench.nn.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == module.__name__:
                assert obj._cache._cache_file._source_stamp[1] == _jit.STAMP, obj
                found += 1
    assert found >= 15


def test_scaling_spells_tool_prints_one_round_of_speedups():
    out = subprocess.run([sys.executable, "tools/scaling_spells.py", "--seconds", "0.01",
                          "--hidden", "8"], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=600).stdout.splitlines()
    rows = [line for line in out if line.strip() and line.split()[0][0].isdigit()
            and "(" in line]
    assert len(rows) == 1, out
    lstm, blas, work = rows[0].split()[:3]
    assert float(lstm) > 0 and float(work) > 0 and (blas == "nan" or float(blas) > 0)
    assert re.fullmatch(r"[01] of 1 rounds: the LSTM call no faster on \d+ threads than on one",
                        out[-1]), out[-1]


# Flattened LLVM feature strings as llvmlite reports them: every feature LLVM knows, the
# disabled ones with "-" (abridged from real hosts).
_AVX512_HOST = "+64bit,+avx,+avx2,+avx512bw,+avx512dq,+avx512f,+avx512vl,+fma,+sse4.2"
_AVX2_HOST = "+64bit,+avx,+avx2,-avx512bw,-avx512dq,-avx512f,-avx512vl,+fma,+sse4.2"
_ARM64_HOST = "+neon,+fp-armv8,+crc,+lse,+rdm,+dotprod,-sve,-sve2"


@pytest.mark.parametrize("flat,expect", [
    (_AVX512_HOST, 64), (_AVX2_HOST, 32), (_ARM64_HOST, 32), ("", 32),
])
def test_layout_follows_the_enabled_features(flat, expect):
    from optbench.nn._jit import choose_vector_bytes, enabled_features

    features = enabled_features(flat)
    assert choose_vector_bytes(features) == expect
    assert "avx512f" not in enabled_features(_AVX2_HOST)  # listed, but as "-avx512f"
    assert choose_vector_bytes(features, "32") == 32
    assert choose_vector_bytes(features, "64") == 64


def test_layout_override_must_be_a_known_width():
    from optbench.nn._jit import choose_vector_bytes

    with pytest.raises(ValueError, match="OPTBENCH_NN_VECTOR_BYTES='16'; allowed: 32"):
        choose_vector_bytes(frozenset(), "16")


def test_layout_is_in_info_and_in_each_cells_environment():
    from optbench.env import environment
    from optbench.nn._jit import VECTOR_BYTES, layout

    assert environment(include_cuda=False)["nn_layout"] == layout()
    assert layout().startswith("AVX-512" if VECTOR_BYTES == 64 else "AVX2")
