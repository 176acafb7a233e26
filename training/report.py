"""The final report of a job: loss-curve PNG, metrics table (markdown), before/after samples, artifacts.

    files = write(workdir, {"ppl_before": 7.5, "ppl_after": 6.6}, history, samples, artifacts={"adapter": "..."})
    files["plot"]  # workdir / "loss.png"; files["report"]: workdir / "report.md"
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def loss_curve(history: list[dict[str, Any]], path: Path, evals: list[dict[str, Any]] | None = None,
               title: str = "training loss") -> Path:
    """PNG of loss per step (and held-out points if given), drawn off-screen with matplotlib's Agg."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    steps = [h["step"] for h in history]
    losses = [h["loss"] for h in history]
    ax.plot(steps, losses, label="train loss", linewidth=1.0, alpha=0.45 if len(losses) >= 8 else 1.0)
    if len(losses) >= 8:  # per-step loss is noisy with small batches; the trend is what people look for
        ax.plot(steps, smooth(losses), label="train loss (smoothed)", linewidth=2.0)
    if evals:
        ax.plot([e["step"] for e in evals], [e["loss"] for e in evals], "o-", label="val loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average, bias-corrected so the first points are not pulled towards zero.

    >>> [round(v, 2) for v in smooth([1.0, 1.0, 4.0])]
    [1.0, 1.0, 2.23]
    """
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return "n/a" if value is None else str(value)


def metrics_table(metrics: dict[str, Any]) -> str:
    """Markdown table of the scalar metrics, in insertion order."""
    rows = [(k, v) for k, v in metrics.items() if isinstance(v, int | float | str) or v is None]
    return "\n".join(["| metric | value |", "|---|---|", *(f"| {k} | {fmt(v)} |" for k, v in rows)])


def summary(metrics: dict[str, Any], samples: list[dict[str, str]], artifacts: dict[str, str], title: str) -> str:
    parts = [f"## Training report: {title}", "", metrics_table(metrics)]
    if samples:
        parts += ["", "### Samples (greedy, same prompts before and after)"]
        for s in samples:
            parts += ["", f"**Prompt:** {_short(s['prompt'])}", f"- before: {_short(s['before'])}",
                      f"- after: {_short(s['after'])}"]
    if artifacts:
        parts += ["", "### Artifacts", *(f"- {k}: `{v}`" for k, v in artifacts.items())]
    return "\n".join(parts) + "\n"


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def write(workdir: Path, metrics: dict[str, Any], history: list[dict[str, Any]], samples: list[dict[str, str]],
          *, artifacts: dict[str, str] | None = None, evals: list[dict[str, Any]] | None = None,
          title: str = "job") -> dict[str, Path]:
    """Write loss.png and report.md into `workdir`; returns {"plot": ..., "report": ...}."""
    out: dict[str, Path] = {}
    workdir.mkdir(parents=True, exist_ok=True)
    if history:
        out["plot"] = loss_curve(history, workdir / "loss.png", evals, title=f"{title}: training loss")
    all_artifacts = {**(artifacts or {}), **{k: str(v) for k, v in out.items()}}
    path = workdir / "report.md"
    path.write_text(summary(metrics, samples, all_artifacts, title))
    out["report"] = path
    return out
