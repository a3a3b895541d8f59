"""The bench's model cache (bench/run.py): a cached float teacher is reused only while it reads as a
teacher of the architecture on the dataset and was trained with today's recipe."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_float_teacher_is_trained_once_and_retrained_when_unusable_or_stale(bench, tmp_path):
    (tmp_path / "models").mkdir()
    logged = []

    def teacher(epochs):
        return bench.float_teacher(tmp_path, "tfc", "digits", "digits", epochs, logged.append)

    path = teacher(1)
    assert path.is_file() and len(logged) == 1 and logged[0].endswith("(a teacher)")
    first = path.stat().st_mtime_ns
    assert teacher(1) == path and len(logged) == 1 and path.stat().st_mtime_ns == first   # reused

    path.write_bytes(b"not a teacher")
    assert teacher(1) == path and "the cached one is unusable" in logged[-1] and len(logged) == 2
    assert teacher(1) == path and len(logged) == 2          # the retrained file reads again

    stale = tmp_path / "models" / "tfc-digits-epochs2-float.pt"
    path.rename(stale)                                      # a 1-epoch teacher where 2 epochs are asked
    assert teacher(2) == stale and "the cached one's epochs differ from today's recipe" in logged[-1]
