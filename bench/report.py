"""Write benchmark rows into BENCHMARKS.md, each section a table with the command that made it."""
from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
# ASR_BENCHMARKS redirects the rows, e.g. to a file outside a working tree that gets re-synced.
BENCHMARKS = Path(os.environ.get("ASR_BENCHMARKS", REPO / "BENCHMARKS.md"))


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    name = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads"


def record(section: str, columns: list[str], rows: list[list[str]], note: str = "") -> None:
    """Append `rows` to the table of `section` (created if missing), stamped with date and command."""
    command = "python -m " + Path(sys.argv[0]).resolve().with_suffix("").relative_to(REPO).as_posix().replace("/", ".")
    command += "".join(" " + a for a in sys.argv[1:])
    header = ["date", "machine", *columns, "command"]
    lines = BENCHMARKS.read_text().splitlines() if BENCHMARKS.exists() else ["# Benchmarks", ""]
    title = f"## {section}"
    if title not in lines:
        lines += ["", title, ""] + ([note, ""] if note else []) + [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
    end = lines.index(title) + 1
    while end < len(lines) and not lines[end].startswith("## "):
        end += 1
    while lines[end - 1].strip() == "":
        end -= 1
    today = datetime.date.today().isoformat()
    new = ["| " + " | ".join([today, machine(), *row, f"`{command}`"]) + " |" for row in rows]
    lines[end:end] = new
    BENCHMARKS.write_text("\n".join(lines).rstrip() + "\n")
