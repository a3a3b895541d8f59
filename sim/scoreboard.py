"""What both benches check and measure, in plain Python (no cocotb): the per-cycle bench
(sim/cocotb_tb.py) inside the simulator, the fast mode (sim/fast.py) on the harness's dumps.

- `Scoreboard`: every output beat against the golden class index and every class score.
- `steady_state_ii`: the II from the cycle stamps of a clean, back-to-back run.
- `watchdog_cycles`: how long without an output a design counts as stuck.
"""
from __future__ import annotations

import numpy as np

from xnorflow.hw.stream_format import decode_output


class Scoreboard:
    """Compares each output beat, in order, with the golden class index and every class score of
    the frames ``image_ids`` (``scores`` and ``predictions`` are golden's, one row per frame)."""

    def __init__(self, n_classes: int, index_width: int, score_width: int, image_ids, scores, predictions):
        self.layout = (n_classes, index_width, score_width)
        self.image_ids, self.scores, self.predictions = image_ids, scores, predictions

    def check(self, frame: int, payload: int) -> dict:
        """The record of one output beat; a negative payload (X bits read from a dump) decodes as -1s."""
        n_classes, index_width, score_width = self.layout
        index, scores = (decode_output(payload, n_classes, index_width, score_width) if payload >= 0
                         else (-1, [-1] * n_classes))
        expected_scores = [int(s) for s in self.scores[frame]]
        expected_index = int(self.predictions[frame])
        record = {"frame": frame, "image": int(self.image_ids[frame]), "index": index, "scores": scores}
        if index != expected_index or scores != expected_scores:
            record["mismatch"] = {
                "expected_index": expected_index, "expected_scores": expected_scores,
                "differing_classes": [k for k, (g, e) in enumerate(zip(scores, expected_scores)) if g != e],
            }
        return record


def steady_state_ii(output_cycles: list[int]) -> float | None:
    """Cycles between consecutive outputs once the pipeline is full: the median gap over the
    second half of a clean, back-to-back run (the first outputs still see the pipeline filling)."""
    if len(output_cycles) < 3:
        return None
    gaps = np.diff(np.asarray(output_cycles))
    return float(np.median(gaps[len(gaps) // 2:]))


def watchdog_cycles(analytic_ii: int, stages: int, gaps: float, backpressure: float) -> int:
    """Cycles without any output after which a design of ``stages`` engines counts as stuck: far
    beyond a frame's latency through every layer even with random stalls."""
    stall = 1.0 / max(0.05, 1.0 - max(gaps, backpressure))
    return int(64 * analytic_ii * stall * (stages + 2)) + 2000
