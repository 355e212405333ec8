"""Steps on cached arrays run in workflow/envs/analysis.yaml, which has no torch: the
modules they use must import without it."""

from __future__ import annotations

import subprocess
import sys

ANALYSIS_MODULES = [
    "opnp",
    "opnp.sensitivity",
    "opnp.pruning",
    "opnp.grid",
    "opnp.metrics",
    "opnp.bootstrap",
    "opnp.result_rows",
    "opnp.selection_rule",
    "opnp.detectors",
    "opnp.scores",
    "opnp.pipeline.results",
    "opnp.pipeline.selection",
    "opnp.pipeline.evaluation",
    "opnp.pipeline.ablations",
    "opnp.pipeline.artifacts",
    "opnp.pipeline.config",
    "opnp.report",  # imports every table and figure module
    "opnp.io",
    "opnp.features",  # merge and replicate steps run in the analysis env
    "opnp.nets.model_api",  # torch only when a ModelDetector is built
]


def test_analysis_modules_import_without_torch():
    # A finder that refuses torch the way a missing package does (ImportError), so
    # libraries that probe for torch (scipy, seaborn) see it absent, not broken.
    block_torch = (
        "import sys, importlib.abc\n"
        "class NoTorch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
    )
    code = (
        block_torch
        + "".join(f"import {m}\n" for m in ANALYSIS_MODULES)
        + "from opnp.detectors import create_detector\n"
        + "assert callable(opnp.from_model) and 'torch' not in sys.modules\n"
        + "import numpy as np\n"
        + "d = create_detector('opnp', weight=np.eye(3), bias=np.zeros(3), weight_low=10).fit(np.abs(np.eye(3)))\n"
        + "print(d.score(np.eye(3)).shape)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(3,)"
