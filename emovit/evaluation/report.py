"""The files an evaluation run leaves in its output folder: metrics.json, predictions.jsonl, confusion_matrix.png
and, for `score` runs, reliability_diagram.png and risk_coverage.png; each written to a temporary file and renamed, so
a crash never leaves half a file."""

import json
from pathlib import Path

from matplotlib.figure import Figure

from emovit_utils.files import atomic_write, atomic_write_text


def markdown_table(rows: list[dict], columns: list[str] | None = None, decimals: int = 4) -> str:
    """`rows` (dicts) as a markdown table over `columns` (default: every key of the rows, in the order first seen);
    floats with `decimals` places, a missing or None value as '–'."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value) -> str:
        if value is None:
            return "–"
        return f"{value:.{decimals}f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_confusion_matrix(confusion: list[list[int]], invalid_per_class: list[int], labels: list[str],
                          title: str) -> Figure:
    """The confusion matrix (rows: labels, columns: predictions) with counts in the cells, plus an "(invalid)"
    column when some answers named no label."""
    matrix = [row + [invalid] for row, invalid in zip(confusion, invalid_per_class)]
    columns = labels + ["(invalid)"]
    if not any(invalid_per_class):
        matrix, columns = confusion, labels
    size = 1.0 + 0.6 * len(columns)
    figure = Figure(figsize=(size + 1.5, size))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("prediction")
    axes.set_ylabel("label")
    axes.set_title(title)
    peak = max(max(row) for row in matrix) or 1
    for r, row in enumerate(matrix):
        for c, count in enumerate(row):
            axes.text(c, r, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    figure.tight_layout()
    return figure


def plot_reliability(reliability: list[dict], ece: float, title: str, calibrated: dict | None = None) -> Figure:
    """The reliability diagram: per confidence bin, the accuracy of its top-1 answers (bars, at the bin's mean
    confidence) against the diagonal of perfect calibration, with each bin's share of images below; with
    `calibrated` (metrics.json's block), the same after the fitted temperature as a second series."""
    series = [("raw", reliability, ece, "tab:blue")]
    if calibrated is not None:
        series.append((f"T = {calibrated['temperature']:.3g}", calibrated["reliability"], calibrated["ece"],
                       "tab:orange"))
    figure = Figure(figsize=(5.5, 6))
    axes, shares = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    axes.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    width = (reliability[0]["upper"] - reliability[0]["lower"]) / len(series)
    for offset, (name, bins, value, colour) in enumerate(series):
        filled = [b for b in bins if b["count"]]
        lefts = [b["lower"] + offset * width for b in filled]
        axes.bar(lefts, [b["accuracy"] for b in filled], width=width, align="edge", alpha=0.6, color=colour,
                 edgecolor=colour, label=f"{name}: ECE {value:.3f}")
        axes.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", color=colour, markersize=3)
        total = sum(b["count"] for b in bins)
        shares.bar(lefts, [b["count"] / total for b in filled], width=width, align="edge", color=colour, alpha=0.6)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_ylabel("accuracy")
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize="small")
    shares.set_xlabel("top-1 probability (confidence)")
    shares.set_ylabel("share")
    figure.tight_layout()
    return figure


def plot_risk_coverage(risk_coverage: dict, aurc: float, title: str, calibrated: dict | None = None) -> Figure:
    """The risk-coverage curve (metrics.json's `risk_coverage` points: the error rate of the most confident images
    against the share of images kept) with its AURC in the legend; with `calibrated`, the curve after the fitted
    temperature as a second series."""
    series = [("raw", risk_coverage, aurc, "tab:blue")]
    if calibrated is not None:
        series.append((f"T = {calibrated['temperature']:.3g}", calibrated["risk_coverage"], calibrated["aurc"],
                       "tab:orange"))
    figure = Figure(figsize=(5.5, 4.5))
    axes = figure.add_subplot()
    for name, points, area, colour in series:
        axes.plot(points["coverage"], points["risk"], color=colour, label=f"{name}: AURC {area:.3f}")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.05)  # a risk of 1 stays visible above the frame's edge
    axes.set_xlabel("coverage (share of images kept, most confident first)")
    axes.set_ylabel("selective risk (error rate of those kept)")
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    return figure


def prediction_line(row: dict, ids: list[str], references: list[int], targets: list[str]) -> dict:
    """One line of predictions.jsonl from a run's row (`index`, `prediction` as an index into `targets` or None,
    and the method's extra fields): id, label, prediction, correct, then the extra fields."""
    extra = {key: value for key, value in row.items() if key not in ("index", "prediction")}
    index, prediction = row["index"], row["prediction"]
    return {
        "id": ids[index],
        "label": targets[references[index]],
        "prediction": None if prediction is None else targets[prediction],
        "correct": prediction == references[index],
        **extra,
    }


def write_report(output_dir: str | Path, metrics: dict, lines: list[dict], title: str) -> None:
    """Writes metrics.json, predictions.jsonl (`lines`), the confusion matrix of `metrics` and, when `metrics`
    holds calibration bins and a risk-coverage curve, the reliability diagram and that curve into `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(output_dir / "predictions.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    figure = plot_confusion_matrix(metrics["confusion_matrix"], metrics["invalid_per_class"], metrics["labels"], title)
    atomic_write(output_dir / "confusion_matrix.png", lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    if "reliability" in metrics:
        figure = plot_reliability(metrics["reliability"], metrics["ece"], title, metrics.get("calibrated"))
        atomic_write(output_dir / "reliability_diagram.png", lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    if "risk_coverage" in metrics:
        figure = plot_risk_coverage(metrics["risk_coverage"], metrics["aurc"], title, metrics.get("calibrated"))
        atomic_write(output_dir / "risk_coverage.png", lambda tmp: figure.savefig(tmp, format="png", dpi=120))
