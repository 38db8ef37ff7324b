"""The README's Python snippets run as written (in one fresh interpreter, in order)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_snippets_run():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 2
    script = "\n".join(blocks)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci_command = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python3 ")]
    assert len(ci_command) == 1 and f"```bash\n{ci_command[0]}\n```" in readme


def test_readme_zoo_table_is_generated_from_the_cards():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from zoo_table import BEGIN, END, table
    finally:
        sys.path.pop(0)
    readme = (ROOT / "README.md").read_text()
    assert readme[readme.index(BEGIN) + len(BEGIN):readme.index(END)].strip() == table()
