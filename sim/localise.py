"""Mismatch localisation: which layer and which neuron of the RTL first departs from the golden model.

A failing image is re-run alone with the per-layer debug taps collected (and waves recorded into
``build/sim/mismatch_<image>.vcd``); its tap beats become activation bits, compared layer by layer
with ``golden.execute(...).activations``. Each layer's op decodes its own taps (`Op.decode`) and the
output op the output beat. The first layer whose output differs, and the first channel in it, is
where to look: for a dense hidden layer we also give the golden popcount and the threshold
(`neuron_detail`), so the sentence says whether the threshold, the weights or the popcount is suspect;
for a conv or max-pool layer the output channel and the pixel (y, x) as well (its activations are
H x W x C bits in (y, x, c) order).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from xnorflow.hw.ops import op_for
from xnorflow.hw.spec import NetworkSpec


@dataclass
class Divergence:
    """The first place a frame's RTL computation differs from golden."""

    layer: int
    neuron: int                  # output channel (class, for the output layer)
    rtl: int                     # RTL output bit (score, for the output layer)
    golden: int                  # golden output bit (score)
    popcount: int | None = None  # golden popcount of that neuron (hidden layers), or sum s (int layers)
    threshold: int | None = None
    count_name: str = "popcount"  # what ``popcount`` holds: "popcount", or "sum" for an integer-input layer
    # Conv and max-pool layers: ``neuron`` is the index into the (y, x, c) activations; these name it.
    channel: int | None = None
    pixel: tuple[int, int] | None = None

    def describe(self, image: int, spec: NetworkSpec) -> str:
        if self.layer == len(spec.layers) - 1:
            return (f"image {image}: output layer {self.layer} class {self.neuron} score differs "
                    f"(RTL {self.rtl}, golden {self.golden}); every hidden layer's output matches golden")
        if self.pixel is not None:
            kind = spec.layers[self.layer].kind
            numbers = (f"; {self.count_name} {self.popcount}, threshold {self.threshold}"
                       if self.popcount is not None else "")
            return (f"image {image}: layer {self.layer} ({kind}) channel {self.channel} at pixel (y, x) = "
                    f"{tuple(self.pixel)} differs (RTL {self.rtl}, golden {self.golden}{numbers})")
        return (f"image {image}: layer {self.layer} neuron {self.neuron} differs (RTL {self.rtl}, golden "
                f"{self.golden}; {self.count_name} {self.popcount}, threshold {self.threshold})")


def neuron_popcount(spec: NetworkSpec, layer: int, neuron: int, layer_input: np.ndarray) -> int:
    """Golden popcount(XNOR(x, w)) of one neuron for one frame's input bits of that layer."""
    return op_for(spec.layers[layer], layer).neuron_detail(neuron, layer_input)["popcount"]


def first_divergence(spec: NetworkSpec, frame_input: np.ndarray, golden_activations: list[np.ndarray],
                     rtl_taps: list[list[int]], rtl_scores: list[int] | None,
                     golden_scores: list[int]) -> Divergence | None:
    """Compare one frame's RTL taps (beats per hidden layer) and scores with golden.

    ``golden_activations[k]`` is the (n_out,) output bits of hidden layer k for this frame. Returns
    None when the RTL agrees everywhere it was observed.
    """
    for k, (layer, beats) in enumerate(zip(spec.layers[:-1], rtl_taps)):
        op = op_for(layer, k)
        if len(beats) != op.beats_per_frame:
            # A layer that emitted the wrong number of beats is itself the first divergence.
            return Divergence(layer=k, neuron=min(len(beats) * op.out_width, layer.n_out - 1), rtl=-1, golden=-1)
        rtl_bits = op.decode(beats)[0]
        differ = np.flatnonzero(rtl_bits != golden_activations[k])
        if differ.size:
            neuron = int(differ[0])
            layer_input = frame_input if k == 0 else golden_activations[k - 1]
            detail = op.neuron_detail(neuron, layer_input)
            return Divergence(layer=k, neuron=neuron, rtl=int(rtl_bits[neuron]),
                              golden=int(golden_activations[k][neuron]),
                              popcount=detail.get("popcount", detail.get("sum")), threshold=detail.get("threshold"),
                              count_name="sum" if "sum" in detail else "popcount",
                              channel=detail.get("channel"), pixel=detail.get("pixel"))
    if rtl_scores is not None:
        for c, (got, want) in enumerate(zip(rtl_scores, golden_scores)):
            if got != want:
                return Divergence(layer=len(spec.layers) - 1, neuron=c, rtl=int(got), golden=int(want))
    return None


def _first_record_per_image(records: list[dict]) -> dict[int, dict]:
    first = {}
    for record in records:
        first.setdefault(record["image"], record)
    return first


def localise_mismatches(session, expected, inputs: np.ndarray, records: list[dict], images: list[int], *,
                        seed: int = 0) -> list[dict]:
    """One dict per failing image: expected/got class and scores, and for the first ``images`` of
    them a re-run alone with taps and waves that names the first differing layer and neuron.

    ``session`` is a runner.BenchSession; ``expected`` the golden result of every frame of ``inputs``.
    """
    spec = session.spec
    out = []
    for image, record in sorted(_first_record_per_image(records).items()):
        entry = {
            "image": image,
            "phase": record.get("phase"),
            "expected_class": record["mismatch"]["expected_index"],
            "got_class": record["index"],
            "expected_scores": record["mismatch"]["expected_scores"],
            "got_scores": record["scores"],
            "layer": None, "neuron": None, "message": None, "waves": None,
        }
        if image in images:
            entry.update(_rerun_and_localise(session, spec, expected, inputs, image, seed))
        else:
            entry["message"] = (f"image {image}: RTL class {record['index']}, golden "
                                f"{record['mismatch']['expected_index']} (not re-run: only the first failures are)")
        out.append(entry)
    return out


def _golden_of(expected, frames: list[int]):
    """The golden result restricted to ``frames`` (same type as golden.execute's)."""
    return type(expected)(scores=expected.scores[frames], predictions=expected.predictions[frames],
                          activations=[a[frames] for a in expected.activations])


def _rerun_and_localise(session, spec: NetworkSpec, expected, inputs: np.ndarray, image: int, seed: int) -> dict:
    waves = session.folder.mismatch_waves(image)
    raw = session.run(f"mismatch_{image}", np.array([image]), inputs[[image]], _golden_of(expected, [image]),
                      backpressure=0.0, gaps=0.0, seed=seed, waves_file=waves, collect_taps=True,
                      clean_only=True, reset_test=False, measure_frames=1)
    frame = raw["frames"][0] if raw["frames"] else None
    taps = raw.get("taps", {}).get("0", [[] for _ in spec.layers[:-1]])
    divergence = first_divergence(
        spec, inputs[image], [a[image] for a in expected.activations], taps,
        frame["scores"] if frame else None, [int(s) for s in expected.scores[image]])
    result = {"waves": str(waves) if waves.is_file() else None, "reproduced_alone": bool(raw["mismatches"])}
    if divergence is None:
        result["message"] = (f"image {image}: the mismatch did not reproduce when the frame ran alone "
                             "with no stalls: suspect flow control (backpressure, gaps) rather than the datapath")
        return result
    result.update({k: v for k, v in asdict(divergence).items() if k != "layer" and k != "neuron"})
    result["layer"], result["neuron"] = divergence.layer, divergence.neuron
    result["message"] = divergence.describe(image, spec)
    return result


def record_waves(session, expected, inputs: np.ndarray, frames: list[int], *, seed: int = 0) -> str | None:
    """Waves of the first frames run clean (for a user who asked for waves and had no mismatch)."""
    path = session.folder.waves_file
    session.run("waves", np.asarray(frames), inputs[frames], _golden_of(expected, frames),
                backpressure=0.0, gaps=0.0, seed=seed, waves_file=path, collect_taps=True,
                clean_only=True, reset_test=False, measure_frames=len(frames))
    return str(path) if path.is_file() else None


def mismatch_lines(result: dict, limit: int = 10) -> list[str]:
    """Human lines for a simulate() result's mismatches (what the CLI prints)."""
    lines = [m["message"] for m in result.get("mismatches", [])[:limit] if m.get("message")]
    more = len(result.get("mismatches", [])) - limit
    if more > 0:
        lines.append(f"... and {more} more failing images (see {result.get('results_file', 'results.json')})")
    return lines
