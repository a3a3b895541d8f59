"""build/report.html and build/figures/*.png: the build report for a person.

One self-contained page (figures embedded as data URIs, no scripts, no network): pipeline balance
(per-layer cycles against the II), resources against the device, accuracy and the confusion matrix,
and the fold settings. Every figure comes from report.json and vectors.npz; nothing is recomputed.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from . import report as reports

FIGURES_DIR = "figures"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pipeline_balance(report: dict, path: Path) -> Path:
    plt = _pyplot()
    layers = report["layers"]
    cycles = [l["cycles"] for l in layers]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bars = ax.bar([f"L{i}\n{l['n_in']}→{l['n_out']}" for i, l in enumerate(layers)], cycles, color="#4c72b0")
    ax.axhline(report["analytic_cycles_per_frame"], color="#c44e52", ls="--",
               label=f"analytic II {report['analytic_cycles_per_frame']}")
    if report.get("cycles_per_frame"):
        ax.axhline(report["cycles_per_frame"], color="#55a868", ls=":", label=f"measured II {report['cycles_per_frame']}")
    ax.bar_label(bars, labels=[str(c) for c in cycles], fontsize=8)
    ax.set_ylabel("cycles per frame")
    ax.set_title("Pipeline balance: each layer's cycles against the II")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_resources(report: dict, board, path: Path) -> Path:
    plt = _pyplot()
    estimate = report.get("estimate") or {}
    rows = [("LUTs", report.get("luts"), estimate.get("luts"), board.luts),
            ("memory blocks", report.get("brams"), estimate.get("brams"), board.bram_blocks)]
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    labels = [r[0] for r in rows]
    used = [100 * (r[1] or 0) / r[3] for r in rows]
    est = [100 * (r[2] or 0) / r[3] for r in rows]
    y = np.arange(len(rows))
    ax.barh(y - 0.18, used, height=0.34, color="#4c72b0", label="synthesized (nextpnr)")
    ax.barh(y + 0.18, est, height=0.34, color="#dd8452", label="compiler estimate")
    for i, r in enumerate(rows):
        text = f"{r[1] if r[1] is not None else '-'} used, {r[2] if r[2] is not None else '-'} est. / {r[3]}"
        ax.text(max(used[i], est[i]) + 1, i, text, va="center", fontsize=8)
    ax.set_yticks(y, labels)
    ax.set_xlim(0, 160)
    ax.set_xlabel(f"% of {report.get('device')}")
    ax.set_title("Resources used against the device")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def plot_confusion(matrix: np.ndarray, accuracy: float, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.imshow(matrix, cmap="Blues")
    n = matrix.shape[0]
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix (golden model, {accuracy:.2%})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value) -> str:
    return html.escape(reports.format_figure(value, missing="—"))


def _table(headers, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } .ok { color: #1a7f37; } .bad { color: #c0392b; font-weight: bold; }
img { max-width: 100%; margin: .4em 0; } .figs { display: flex; flex-wrap: wrap; gap: 1em; }
"""


def write_html_report(build_dir, out_dir=None) -> Path:
    """report.html and figures/ from the build's report.json, written into ``out_dir`` (default:
    the build folder; the flow passes a staging folder that then replaces both at once)."""
    from xnorflow.boards.registry import get_board

    build_dir = Path(build_dir)
    out_dir = build_dir if out_dir is None else Path(out_dir)
    report = reports.read_report(build_dir)
    board = get_board(report["board"])
    figures = out_dir / FIGURES_DIR
    figures.mkdir(exist_ok=True)
    with np.load(build_dir / "vectors.npz") as vectors:
        # A QONNX graph compiled without --dataset has random frames and no labels: no confusion matrix.
        labels = vectors["labels"] if "labels" in vectors.files else None
        predictions = vectors["golden_predictions"]

    balance = plot_pipeline_balance(report, figures / "pipeline_balance.png")
    resources = plot_resources(report, board, figures / "resources.png")
    if labels is not None:
        n_classes = int(max(labels.max(), predictions.max()) + 1)
        matrix = confusion_matrix(labels, predictions, n_classes)
        confusion = plot_confusion(matrix, report["accuracy_golden"], figures / "confusion.png")
        accuracy_section = (f'<div class="figs">{_img(confusion, "confusion matrix")}</div>\n'
                            f"<p>Rows are true classes, columns predicted classes, on {len(labels)} test images.</p>")
    else:
        accuracy_section = (f"<p>Not measured: the {len(predictions)} test frames are seeded random bits "
                            "(compile a QONNX graph with --dataset to measure accuracy).</p>")

    mismatches = report.get("rtl_mismatches")
    verdict = ("<span class='ok'>bit-exact: 0 mismatches</span>" if mismatches == 0 else
               "<span class='bad'>not simulated</span>" if mismatches is None else
               f"<span class='bad'>{mismatches} images differ from the golden model</span>")
    summary_rows = [
        ("accuracy: PyTorch / golden / RTL", " / ".join(_fmt(report.get(k)) for k in
                                                       ("accuracy_torch", "accuracy_golden", "accuracy_rtl"))),
        ("PyTorch–golden agreement", _fmt(report.get("torch_golden_agreement"))),
        ("images simulated in Verilator", _fmt(report.get("images_simulated"))),
        ("II measured / analytic (cycles per frame)",
         f"{_fmt(report.get('cycles_per_frame'))} / {_fmt(report.get('analytic_cycles_per_frame'))}"),
        ("latency (cycles)", _fmt(report.get("latency_cycles"))),
        ("Fmax (MHz)", _fmt(report.get("fmax_mhz"))),
        ("frames per second at Fmax", _fmt(report.get("fps"))),
        ("frames per second at the bitstream clock", _fmt(report.get("fps_at_clock"))),
        ("compile / synthesis seconds", f"{_fmt(report.get('compile_seconds'))} / {_fmt(report.get('synth_seconds'))}"),
    ]
    summary = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{v}</td></tr>"
                      for k, v in summary_rows)
    estimate = report.get("estimate") or {}
    fold_rows = [(i, l["n_in"], l["n_out"], l["pe"], l["simd"], l["cycles"],
                  (estimate.get("layers") or [{}] * len(report["layers"]))[i].get("brams"))
                 for i, l in enumerate(report["layers"])]
    resource_rows = [("LUTs", report.get("luts"), estimate.get("luts"), board.luts),
                     ("flip-flops", report.get("ffs"), None, None),
                     ("memory blocks", report.get("brams"), estimate.get("brams"), board.bram_blocks),
                     ("SPRAMs", report.get("sprams"), None, board.sprams),
                     ("DSPs", report.get("dsps"), None, board.dsps)]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>xnorflow build report: {html.escape(str(report.get('arch')))}</title>
<style>{STYLE}</style></head><body>
<h1>xnorflow build report — {html.escape(str(report.get('arch')))} on {html.escape(str(report.get('dataset')))},
{html.escape(board.name)} ({html.escape(board.device)})</h1>
<p>RTL against golden model: {verdict}</p>
<h2>Summary</h2><table>{summary}</table>
<h2>Pipeline balance and fold settings</h2>
<p>{html.escape(str(report.get('folding_reason') or ''))}</p>
<div class="figs">{_img(balance, "per-layer cycles against the II")}</div>
{_table(("layer", "inputs", "outputs", "PE", "SIMD", "cycles/frame", "memory blocks (est.)"), fold_rows)}
<h2>Resources</h2>
<div class="figs">{_img(resources, "resources used against the device")}</div>
{_table(("resource", "synthesized", "estimated", "device has"), resource_rows)}
<h2>Accuracy</h2>
{accuracy_section}
<p style="color:#777;font-size:.85em">Generated by xnorflow from {html.escape(str(build_dir / reports.REPORT_NAME))}.</p>
</body></html>
"""
    out = out_dir / "report.html"
    out.write_text(page)
    return out
