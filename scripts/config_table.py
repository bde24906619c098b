"""Regenerate the README's config reference table from the config's attribute docstrings."""

import re
import sys
from pathlib import Path

from rankscope.config import config_reference

readme = (
    Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "README.md"
)
text = readme.read_text()
rows = "\n".join(f"| `{k}` | `{d}` | {m.replace('|', '/')} |" for k, d, m in config_reference())
table = f"| key | default | meaning |\n|---|---|---|\n{rows}\n"
new, n = re.subn(r"\| key \| default \| meaning \|\n\|---\|---\|---\|\n(?:\|.*\n)*", table, text)
assert n == 1, "config table not found in README.md"
readme.write_text(new)
