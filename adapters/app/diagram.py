"""``voice-agent diagram``: the call's states written as Mermaid for the docs.

Mermaid always, since the docs render it; SVG and PNG beside it when Graphviz's
``dot`` is installed, for places that do not.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from engine.diagram import dot, states_markdown


def write_diagram(path: Path) -> int:
    """Write the diagram to ``path`` (and its renderings beside it); the exit status."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(states_markdown())
    print(f"wrote {path}")
    if shutil.which("dot") is None:
        print("(install Graphviz for SVG/PNG renderings)")
        return 0
    for fmt in ("svg", "png"):
        out = path.with_suffix(f".{fmt}")
        subprocess.run(["dot", f"-T{fmt}", "-o", str(out)], input=dot(), text=True, check=True)
        print(f"wrote {out}")
    return 0
