"""The README's "in your own training loop" example runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_training_loop_example_runs():
    text = README.read_text()
    section = text.split("## Use ESS in your own training loop", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 1284, (2, 64, 64), generator=g)
    labels[0, :8] = 65535
    loader = [(torch.randn(2, 3, 64, 64, generator=g), labels)] * 2
    namespace = {"loader": loader}
    exec(compile(code, str(README), "exec"), namespace)
    pred = namespace["pred"]
    assert pred.shape == (2, 64, 64) and 0 <= pred.min() and pred.max() < 1284
    assert torch.isfinite(namespace["loss"])
