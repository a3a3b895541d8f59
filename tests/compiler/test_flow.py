"""`xnorflow flow`: every step into one build folder, resumable, ending in a report a person can read."""
import json
from html.parser import HTMLParser

import numpy as np
from conftest import run_cli
from PIL import Image


class PageCheck(HTMLParser):
    """Collects images and checks that every opened element is closed (void elements aside)."""

    VOID = frozenset({"img", "meta", "br", "hr", "link", "input"})

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def test_flow_without_synthesis_then_resume(tfc_digits_model, tmp_path):
    build = tmp_path / "flow"
    result = run_cli("flow", "--model", tfc_digits_model, "-o", build, "--images", "40", "--no-synth")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in ("[1/5] train", "[2/5] compile", "[3/5] simulate", "[4/5] synth", "[5/5] report"):
        assert step in out
    report = json.loads((build / "report.json").read_text())
    assert report["images_simulated"] == 40 and report["rtl_mismatches"] == 0
    assert report["cycles_per_frame"] == report["analytic_cycles_per_frame"]
    assert report["fmax_mhz"] is None and report["fps"] is None        # not synthesized: not made up
    assert "RTL mismatches" in out and "report.json" in out

    # The page is well formed, self-contained, and its figures are real PNGs with content.
    page = (build / "report.html").read_text()
    check = PageCheck()
    check.feed(page)
    assert not check.errors and not check.stack
    assert len(check.images) == 3 and all(i["src"].startswith("data:image/png;base64,") for i in check.images)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for png in ("pipeline_balance.png", "resources.png", "confusion.png"):
        image = np.asarray(Image.open(build / "figures" / png).convert("L"))
        assert image.shape[0] > 200 and image.shape[1] > 300
        assert image.std() > 10, f"{png} looks blank"

    # Run again: every step that is done is reused.
    again = run_cli("flow", "--model", tfc_digits_model, "-o", build, "--images", "40", "--no-synth")
    assert again.returncode == 0, again.stderr
    assert "reusing the compiled design" in again.stdout and "reusing 40 simulated images" in again.stdout


def test_run_sends_test_images_to_a_board_over_its_serial_port(tfc_digits_model, tmp_path):
    """`xnorflow run` against a software model of the board protocol, served on a real pseudo-terminal."""
    from xnorflow.boards.host import BoardModel
    from xnorflow.hw.spec import NetworkSpec

    build = tmp_path / "b"
    assert run_cli("compile", tfc_digits_model, "-o", build).returncode == 0
    with BoardModel(NetworkSpec.load(build / "spec.npz")) as board:
        result = run_cli("run", build, "--port", board.port, "--images", "30")
        answered = board.frames_answered
    assert result.returncode == 0, result.stderr
    assert answered == 30
    with np.load(build / "vectors.npz") as v:
        expected = np.mean(v["golden_predictions"][:30] == v["labels"][:30])
    assert f"accuracy                 {expected:.4f}" in result.stdout


def test_simulate_a_build_folder_given_as_a_relative_path(tfc_digits_model, tmp_path):
    """As in `make demo` (build/demo): the simulator runs elsewhere and must still find the build."""
    assert run_cli("compile", tfc_digits_model, "-o", "rel", cwd=tmp_path).returncode == 0
    result = run_cli("simulate", "rel", "--images", "10", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "rel" / "report.json").read_text())["images_simulated"] == 10
