"""The README's Python example runs as printed: each line marked ``# ->`` is what the line before it prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_example_prints_what_it_says(shared_data, tmp_path, monkeypatch):
    text = README.read_text()
    section = text.split("## From Python", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    expected = [line.split("# -> ", 1)[1] for line in block.splitlines() if line.startswith("# -> ")]
    assert len(expected) == 3
    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path / "cache"))
    code = block.replace('"../shared/data/', f'"{shared_data}/')
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert out.getvalue().splitlines() == expected
