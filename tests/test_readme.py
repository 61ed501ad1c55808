"""The README's Python example runs as printed, from the repository root."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_python_block(section: str) -> str:
    """The first ```python block of the README section titled `section`."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    match = re.search(r"```python\n(.*?)```", text[start:end if end != -1 else None], re.S)
    assert match, f"no python block in README section {section!r}"
    return match.group(1)


def test_the_own_code_example_runs_one_ccl_audio_step():
    code = readme_python_block("Using the pieces in your own code")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)   # as printed: from the repository root, nothing installed
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loss, terms = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert float(loss) > 0
    assert ast.literal_eval(terms) == ["audio/contrast", "audio/divergence", "audio/head", "ce", "student"]
