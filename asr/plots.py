"""Pictures of a training run and of its WER, where a picture beats the CSV or the table.

    python -m asr.plots training exp/x                       # exp/x/train_log.csv -> exp/x/train_log.png
    python -m asr.plots training exp/x exp/y -o runs.png     # several runs on shared axes
    python -m asr.plots wer exp/x                            # exp/x/wer.md -> exp/x/wer.png
    python -m asr.plots wer exp/a exp/b exp/c --labels 2k 4k 6k -o progress.png
    python -m asr.plots wer exp/m2k exp/m4k exp/c2k exp/c4k --labels 2k 4k 2k 4k \
        --groups matryoshka matryoshka coarse-only coarse-only -o compare.png

asr.train redraws `train_log.png` at checkpoints (at most once a minute) and at its end, and
asr.evaluate draws `wer.png` beside `wer.md`, so a run's folder always has both; this command
redraws them or compares runs.

- training: the loss, the pruned loss of each merge granularity, the fraction of encoder frames
  each granularity keeps, and the learning rate, against the step (noisy series are smoothed).
- wer, one run: WER against the fraction of encoder frames kept, one line per decoding mode and a
  point per granularity (the merging trade-off), and the WER of each speaking-rate third per
  granularity (where coarse levels lose: fast speech runs short of frames).
- wer, several runs: the WER of each granularity across the runs, one panel per decoding mode
  (e.g. the same model after more training steps); with --groups, a line per family of runs.
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("asr.plots")

THIRDS = ("slow", "mid", "fast")


# ---- reading -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingLog:
    """The columns of one run's train_log.csv, as floats, rows in step order."""

    name: str
    columns: dict[str, list[float]]

    @property
    def steps(self) -> list[float]:
        return self.columns["step"]

    def granularities(self, prefix: str) -> list[str]:
        """Granularity names that have a `<prefix>_<name>` column, in the log's order."""
        return [key[len(prefix) + 1 :] for key in self.columns if key.startswith(prefix + "_")]


def read_training_log(path: Path, name: str | None = None) -> TrainingLog:
    """A train_log.csv (or the run folder holding one). A resumed run appends to the same file, so
    a step may appear twice: the later row wins."""
    path = Path(path)
    if path.is_dir():
        path = path / "train_log.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path} (asr.train writes train_log.csv into its exp dir)")
    rows: dict[float, dict[str, float]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                values = {k: float(v) for k, v in row.items() if k and v not in (None, "")}
            except ValueError as error:
                raise ValueError(f"{path}: not a training log row ({error})") from None
            if "step" not in values:
                raise ValueError(f"{path}: no 'step' column; is this a train_log.csv?")
            rows[values["step"]] = values
    if not rows:
        raise ValueError(f"{path} has no rows yet (the first is written after log_every steps)")
    ordered = [rows[step] for step in sorted(rows)]
    keys = list(dict.fromkeys(k for row in ordered for k in row))
    columns = {k: [row.get(k, math.nan) for row in ordered] for k in keys}
    return TrainingLog(name or path.parent.name, columns)


@dataclass(frozen=True)
class WerRow:
    """One line of asr.evaluate's wer.md."""

    part: str
    method: str  # greedy or beam
    mode: str  # offline or chunk<N>ms
    granularity: str  # "" for a model without merge granularities
    wer: float
    kept: float | None  # fraction of encoder frames kept; None in tables from before the column
    thirds: tuple[float, float, float] | None  # WER of the slow / mid / fast third

    @property
    def decoding(self) -> str:
        return f"{self.method} {self.mode}"


_SETTING = re.compile(r"^(?P<method>[a-z]+)-(?P<mode>offline|chunk\d+ms)(?:-(?P<granularity>.+))?$")


def read_wer_table(path: Path) -> list[WerRow]:
    """The rows of a wer.md (or of the one in a run folder), by the table's own header."""
    path = Path(path)
    if path.is_dir():
        path = path / "wer.md"
    if not path.is_file():
        raise FileNotFoundError(f"no WER table at {path} (python -m asr.evaluate writes wer.md)")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip().startswith("|")]
    if len(lines) < 3:
        raise ValueError(f"{path} holds no WER table")
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    index = {name: i for i, name in enumerate(header)}
    for needed in ("test set", "decoding", "WER %"):
        if needed not in index:
            raise ValueError(f"{path}: the table has no '{needed}' column")
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        match = _SETTING.match(cells[index["decoding"]])
        if not match:
            raise ValueError(f"{path}: cannot read the decoding setting {cells[index['decoding']]!r}")
        kept = cells[index["tokens kept"]] if "tokens kept" in index else ""
        thirds = cells[index["WER slow / mid / fast third"]] if "WER slow / mid / fast third" in index else ""
        rows.append(WerRow(
            part=cells[index["test set"]], method=match["method"], mode=match["mode"],
            granularity=match["granularity"] or "", wer=float(cells[index["WER %"]]),
            kept=float(kept.rstrip("%")) / 100 if kept.endswith("%") else None,
            thirds=tuple(float(v) for v in thirds.split("/")) if thirds.count("/") == 2 else None,
        ))
    return rows


# ---- drawing -------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a training machine
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its INFO lines are about fonts and axes
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # SVG text stays text: smaller, searchable
    return plt


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing mean over `window` values (NaN skipped), so a curve's trend shows through the noise."""
    result, kept = [], []
    for value in values:
        kept.append(value)
        if len(kept) > window:
            kept.pop(0)
        real = [v for v in kept if not math.isnan(v)]
        result.append(sum(real) / len(real) if real else math.nan)
    return result


def _order_modes(modes: list[str]) -> list[str]:
    """Streaming chunks from the shortest, then offline."""
    def key(mode: str) -> tuple[int, int]:
        digits = re.sub(r"\D", "", mode)
        return (1, 0) if mode.endswith("offline") else (0, int(digits or 0))
    return sorted(modes, key=key)


def plot_training(logs: list[TrainingLog], out: Path) -> Path:
    """Loss, pruned loss per granularity, frames kept per granularity and learning rate, by step."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    styles = ["-", "--", ":", "-."]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    many = len(logs) > 1
    for run, entry in enumerate(logs):
        window = max(1, len(entry.steps) // 25)
        style = styles[run % len(styles)]
        label = entry.name if many else None
        ax = axes[0][0]
        if "loss" in entry.columns:
            line, = ax.plot(entry.steps, smooth(entry.columns["loss"], window), style, label=entry.name)
            if not many:
                ax.plot(entry.steps, entry.columns["loss"], color=line.get_color(), alpha=0.25, linewidth=0.8)
        names = entry.granularities("pruned")
        series = [(f"pruned_{g}", g) for g in names] or [(k, k) for k in ("pruned", "simple", "ctc")
                                                         if k in entry.columns]
        for i, (key, name) in enumerate(series):
            axes[0][1].plot(entry.steps, smooth(entry.columns[key], window), style, color=colors[i % len(colors)],
                            label=f"{name} ({entry.name})" if many else name)
        for i, name in enumerate(entry.granularities("kept")):
            axes[1][0].plot(entry.steps, smooth(entry.columns[f"kept_{name}"], window), style,
                            color=colors[i % len(colors)], label=f"{name} ({entry.name})" if many else name)
        if "lr" in entry.columns:
            axes[1][1].plot(entry.steps, entry.columns["lr"], style, label=label)
    titles = [["loss (smoothed)", "pruned RNN-T loss per granularity (smoothed)"],
              ["fraction of encoder frames kept", "learning rate"]]
    for row in range(2):
        for col in range(2):
            ax = axes[row][col]
            ax.set_title(titles[row][col])
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    if not axes[1][0].lines:
        axes[1][0].text(0.5, 0.5, "no merging in this run", ha="center", va="center", transform=axes[1][0].transAxes)
    if logs and "audio_seconds_per_second" in logs[-1].columns:
        speed = [v for v in logs[-1].columns["audio_seconds_per_second"] if not math.isnan(v)]
        fig.suptitle(f"{', '.join(e.name for e in logs)}: {int(logs[-1].steps[-1])} steps, "
                     f"latest {speed[-1]:.0f} s of audio per s" if speed else "")
    return _save(fig, out)


def plot_wer(runs: list[tuple[str, list[WerRow]]], out: Path, groups: list[str] | None = None) -> Path:
    """One run: the merging trade-off and the speaking-rate thirds. Several: each granularity's WER
    across the runs, one panel per decoding mode. `groups` names each run's family (e.g. the
    Matryoshka model and a coarse-only one, each after more steps): a line per family and
    granularity, over the runs' labels."""
    if not runs or not any(rows for _, rows in runs):
        raise ValueError("no WER rows to plot")
    if groups is not None and len(groups) != len(runs):
        raise ValueError(f"{len(groups)} groups for {len(runs)} runs")
    return _plot_one_run(*runs[0], out) if len(runs) == 1 else _plot_runs(runs, out, groups or [""] * len(runs))


def _plot_one_run(name: str, rows: list[WerRow], out: Path) -> Path:
    plt = _pyplot()
    rate = [r for r in rows if r.thirds]
    fig, axes = plt.subplots(1, 2 if rate else 1, figsize=(11 if rate else 6, 4.5), constrained_layout=True,
                             squeeze=False)
    ax = axes[0][0]
    decodings = _order_modes(list(dict.fromkeys(r.decoding for r in rows)))
    for decoding in decodings:
        points = [r for r in rows if r.decoding == decoding]
        xs = [100 * (r.kept if r.kept is not None else 1.0) for r in points]
        ax.plot(xs, [r.wer for r in points], "o-", label=decoding)
        for x, r in zip(xs, points):
            ax.annotate(r.granularity or "model", (x, r.wer), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("encoder frames kept (%)")
    ax.set_ylabel("WER (%)")
    ax.set_title("WER against frames kept, per granularity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if rate:
        # The offline rows if there are any (the cleanest view of the model), else the longest chunk.
        decoding = _order_modes(list(dict.fromkeys(r.decoding for r in rate)))[-1]
        ax = axes[0][1]
        for r in (r for r in rate if r.decoding == decoding):
            ax.plot(THIRDS, r.thirds, "o-", label=r.granularity or "model")
        ax.set_xlabel("speaking-rate third of the test set")
        ax.set_ylabel("WER (%)")
        ax.set_title(f"WER by speaking rate ({decoding})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    parts = sorted({r.part for r in rows})
    fig.suptitle(f"{name}: {', '.join(parts)}")
    return _save(fig, out)


def _plot_runs(runs: list[tuple[str, list[WerRow]]], out: Path, groups: list[str]) -> Path:
    plt = _pyplot()
    decodings = _order_modes(list(dict.fromkeys(r.decoding for _, rows in runs for r in rows)))
    fig, axes = plt.subplots(1, len(decodings), figsize=(4.2 * len(decodings) + 1, 4.5), constrained_layout=True,
                             squeeze=False, sharey=True)
    labels = list(dict.fromkeys(label for label, _ in runs))  # runs of different groups may share a label
    styles = {group: style for group, style in zip(dict.fromkeys(groups), ["o-", "s--", "^:", "d-."])}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(r.granularity for _, rows in runs for r in rows))
    for ax, decoding in zip(axes[0], decodings):
        for group in styles:
            members = [(label, rows) for (label, rows), g in zip(runs, groups) if g == group]
            for index, name in enumerate(names):
                xs, ys = [], []
                for label, rows in members:
                    match = [r.wer for r in rows if r.decoding == decoding and r.granularity == name]
                    if match:
                        xs.append(labels.index(label))
                        ys.append(match[0])
                if xs:
                    ax.plot(xs, ys, styles[group], color=colors[index % len(colors)],
                            label=" ".join(part for part in (name or "model", group and f"({group})") if part))
        ax.set_xticks(range(len(labels)), labels)
        ax.set_title(decoding)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("WER (%)")
    return _save(fig, out)


@dataclass(frozen=True)
class SpeedPoint:
    """One granularity's figures from bench.merging: what it keeps, costs and buys."""

    series: str  # decoding mode and batch size, e.g. "stream 320 ms, batch 16"
    granularity: str
    kept: float  # fraction of encoder frames kept
    speedup: float  # encoder + joiner + search, against the finest granularity in the same run
    wer: float | None  # None for a random model


def plot_speed(points: list[SpeedPoint], out: Path) -> Path:
    """bench.merging's trade-off: speed-up against frames kept and, for a trained model, WER against
    speed-up; one line per decoding mode and batch size."""
    if not points:
        raise ValueError("no benchmark points to plot")
    plt = _pyplot()
    with_wer = all(p.wer is not None for p in points)
    fig, axes = plt.subplots(1, 2 if with_wer else 1, figsize=(11 if with_wer else 6, 4.5),
                             constrained_layout=True, squeeze=False)
    for series in dict.fromkeys(p.series for p in points):
        line = [p for p in points if p.series == series]
        axes[0][0].plot([100 * p.kept for p in line], [p.speedup for p in line], "o-", label=series)
        if with_wer:
            axes[0][1].plot([p.speedup for p in line], [p.wer for p in line], "o-", label=series)
            for p in line:
                axes[0][1].annotate(p.granularity, (p.speedup, p.wer), textcoords="offset points", xytext=(4, 4),
                                    fontsize=8)
    ax = axes[0][0]
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("encoder frames kept (%)")
    ax.set_ylabel("speed-up against the finest (encoder + joiner + search)")
    ax.set_title("what merging buys in time")
    if with_wer:
        axes[0][1].set_xlabel("speed-up against the finest")
        axes[0][1].set_ylabel("WER (%)")
        axes[0][1].set_title("WER against speed-up")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")  # a viewer never sees half a file
    fig.savefig(tmp, dpi=110, format=out.suffix.lstrip(".") or "png")
    tmp.replace(out)
    _pyplot().close(fig)  # pyplot keeps every figure alive until closed
    return out


def redraw_quietly(out: Path, draw) -> Path | None:
    """For training and evaluation: `draw()` makes `out`; a picture that cannot be drawn is logged,
    never fatal."""
    try:
        return draw()
    except Exception as error:  # noqa: BLE001 - a plot must not cost a training run
        log.warning("could not draw %s: %s", out, error)
        return None


# ---- command line --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m asr.plots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["training", "wer"],
                        help="training: from train_log.csv; wer: from asr.evaluate's wer.md")
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or the CSV / wer.md files themselves)")
    parser.add_argument("--labels", nargs="+", help="a name per run for the legend (default: the folder names)")
    parser.add_argument("--groups", nargs="+",
                        help="wer, several runs: a family name per run (e.g. matryoshka, coarse-only); runs of one "
                             "family form one line per granularity over the labels")
    parser.add_argument("-o", "--out", type=Path,
                        help="image to write, .png or .svg (default: train_log.png / wer.png in the only run's "
                             "folder; required for several runs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"--labels names {len(args.labels)} runs but {len(args.runs)} were given")
    if args.groups and (args.kind != "wer" or len(args.groups) != len(args.runs)):
        parser.error("--groups is for 'wer' and names one family per run")
    if args.out is None and len(args.runs) > 1:
        parser.error("several runs need --out: which folder the picture belongs in is not clear")
    labels = args.labels or [(p if p.is_dir() else p.parent).name for p in args.runs]
    folder = args.runs[0] if args.runs[0].is_dir() else args.runs[0].parent
    try:
        if args.kind == "training":
            out = plot_training([read_training_log(p, n) for p, n in zip(args.runs, labels)],
                                args.out or folder / "train_log.png")
        else:
            out = plot_wer([(n, read_wer_table(p)) for p, n in zip(args.runs, labels)], args.out or folder / "wer.png",
                           args.groups)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    log.info("wrote %s", out)
    return out


if __name__ == "__main__":
    main()
