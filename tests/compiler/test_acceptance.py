"""Issue-level acceptance on the real datasets: full training runs, so marked slow (`make test-all`)."""
import json

import pytest
from conftest import run_cli


@pytest.mark.slow
@pytest.mark.parametrize("arch, dataset, board, folding, min_accuracy", [
    ("tfc", "digits", "icebreaker", "8,16;8,16;8,16;1,16", 0.90),
    ("sfc", "fashion-mnist", "ulx3s-85f", "16,49;16,16;16,16;1,16", 0.85),
])
def test_golden_model_agrees_with_pytorch_on_the_whole_test_split(tmp_path, arch, dataset, board, folding,
                                                                   min_accuracy):
    model = tmp_path / "model.pt"
    trained = run_cli("train", "--arch", arch, "--dataset", dataset, "-o", model)
    assert trained.returncode == 0, trained.stderr
    compiled = run_cli("compile", model, "--board", board, "--folding", folding, "-o", tmp_path / "build")
    assert compiled.returncode == 0, compiled.stderr
    report = json.loads((tmp_path / "build" / "report.json").read_text())
    assert report["test_images"] == (360 if dataset == "digits" else 10_000)
    assert report["torch_golden_agreement"] >= 0.999
    assert report["accuracy_golden"] >= min_accuracy
