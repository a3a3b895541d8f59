"""SWEEP/report.html: a sweep's points for a person: per board, frames/s at the bitstream clock against
LUTs with the Pareto front, the best bitstream, and every point with its status or error.

Measured figures only where a point was synthesized (LUTs from nextpnr, frames/s at the clock the
bitstream was built for); a point built with --no-synth is drawn hollow at the compiler's estimate
(estimated LUTs, frames/s at the board's expected clock) and said to be estimated.
"""
from __future__ import annotations

import html
from pathlib import Path

from .html_report import STYLE, _fmt, _img, _pyplot, _table


def point_figures(row: dict) -> tuple[float | None, float | None, bool]:
    """(LUTs, frames/s at clock, measured?) of a row; estimated when the point was not synthesized."""
    report = row.get("report") or {}
    if report.get("luts") and report.get("fps_at_clock") and report.get("timing_met") is not False:
        return report["luts"], report["fps_at_clock"], True
    luts = (report.get("estimate") or {}).get("luts")
    cycles = report.get("cycles_per_frame") or report.get("analytic_cycles_per_frame")
    planned = report.get("planned_clock_mhz")
    fps = planned * 1e6 / cycles if planned and cycles and not report.get("luts") else None
    return luts, fps, False


def pareto_front(items: list[tuple[float, float, object]]) -> list[tuple[float, float, object]]:
    """The (luts, fps, tag) items no other item beats: no other has fewer or equal LUTs and more frames/s
    (or equal frames/s and fewer LUTs). Sorted by LUTs."""
    front, best_fps = [], -1.0
    for luts, fps, tag in sorted(items, key=lambda item: (item[0], -item[1])):
        if fps > best_fps:
            front.append((luts, fps, tag))
            best_fps = fps
    return front


def best_bitstream(rows: list[dict]) -> dict | None:
    """The synthesized point of ``rows`` (one board) with the most frames/s at its clock, timing met
    (fewer LUTs breaks a tie)."""
    built = [r for r in rows if r["status"] in ("done", "reused") and (r["report"] or {}).get("bitstream")
             and r["report"].get("timing_met") and r["report"].get("fps_at_clock")]
    return max(built, key=lambda r: (r["report"]["fps_at_clock"], -(r["report"].get("luts") or 0)), default=None)


def plot_board(board: str, rows: list[dict], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for measured, style in ((True, {"color": "#4c72b0"}), (False, {"facecolors": "none", "edgecolors": "#888"})):
        points = [point_figures(r)[:2] for r in rows if point_figures(r)[2] == measured and all(point_figures(r)[:2])]
        if points:
            ax.scatter([p[0] for p in points], [p[1] for p in points], s=28, zorder=3,
                       label="synthesized" if measured else "estimated (not synthesized)", **style)
    items = [(*point_figures(r)[:2], r) for r in rows if all(point_figures(r)[:2])]
    front = pareto_front(items)
    if front:
        ax.step([f[0] for f in front], [f[1] for f in front], where="post", color="#c44e52", lw=1.2,
                label="Pareto front", zorder=2)
    ax.set_xlabel("LUTs")
    ax.set_ylabel("frames/s at the bitstream clock")
    ax.set_title(board)
    ax.grid(alpha=0.3)
    if items:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_sweep_report(out_dir, rows: list[dict]) -> Path:
    """report.html (and figures/pareto-<board>.png) in ``out_dir`` from the sweep's result rows."""
    out_dir = Path(out_dir)
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    sections = []
    for board in sorted({r["board"] for r in rows}):
        board_rows = [r for r in rows if r["board"] == board]
        image = plot_board(board, board_rows, figures / f"pareto-{board}.png")
        front = pareto_front([(*point_figures(r)[:2], r) for r in board_rows if all(point_figures(r)[:2])])
        best = best_bitstream(board_rows)
        best_text = (f"<p>Best bitstream: <b>{html.escape(best['point'])}</b>, {_fmt(best['report']['fps_at_clock'])} "
                     f"frames/s at {_fmt(best['report']['clock_mhz'])} MHz, {_fmt(best['report']['luts'])} LUTs: "
                     f"<code>{html.escape(str(best['report']['bitstream']))}</code></p>" if best else
                     "<p>No bitstream that met timing in this sweep.</p>")
        front_rows = [(f[2]["point"], f[0], f[1], "measured" if point_figures(f[2])[2] else "estimated")
                      for f in front]
        sections.append(f"<h2>{html.escape(board)}</h2>{best_text}<div class='figs'>"
                        f"{_img(image, f'frames/s against LUTs on {board}')}</div><h3>Pareto front</h3>"
                        + _table(("point", "LUTs", "frames/s at clock", "figures"), front_rows))
    all_rows = [(r["point"], r["status"], r["report"].get("cycles_per_frame"), r["report"].get("rtl_mismatches"),
                 r["report"].get("luts"), r["report"].get("fmax_mhz"), r["report"].get("clock_mhz") if
                 r["report"].get("luts") else None, r["report"].get("fps_at_clock"), r.get("error") or "")
                for r in rows]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "reused", "failed", "not built")}
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>xnorflow sweep</title><style>{STYLE}</style></head><body>
<h1>xnorflow sweep: {len(rows)} points</h1>
<p>{counts['done']} built, {counts['reused']} reused from an earlier run, {counts['failed']} failed,
{counts['not built']} not built. Every point's figures: results.csv and results.json beside this page.</p>
{''.join(sections)}
<h2>Every point</h2>
{_table(("point", "status", "II", "mismatches", "LUTs", "Fmax MHz", "clock MHz", "frames/s at clock", "error"),
        all_rows)}
</body></html>
"""
    out = out_dir / "report.html"
    out.write_text(page)
    return out
