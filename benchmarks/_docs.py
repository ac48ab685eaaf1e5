"""What every benchmark needs to report: the machine, and its own section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

#: The page every benchmark writes its section into.
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    """CPU model and core count, e.g. ``"Intel(R) Xeon(R) Processor, 2 cores"``."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def markers(name: str) -> tuple[str, str]:
    """The HTML comments that delimit the section of benchmark ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(name: str, section: str, docs: Path = DOCS) -> None:
    """Replace (or append) the section of benchmark ``name`` in ``docs``; other sections stay."""
    start, end = markers(name)
    block = f"{start}\n{section}\n{end}"
    text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    if start in text and end in text:
        pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(text)
