"""``import moezoo`` and the inference path stay light."""

import subprocess
import sys

HEAVY = ["wandb", "webdataset", "lightning", "pytorch_lightning"]


def test_import_moezoo_is_light():
    code = ("import sys, moezoo, moezoo.moe; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
