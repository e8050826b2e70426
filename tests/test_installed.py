"""A non-editable install (``pip install .``) carries the configs and the shipped data, and the quickstart
runs from it, started in a directory that is not the repository.

The wheel is built from a copy of the tracked files (so nothing stale in ``build/`` can hide a missing
file), installed into a fresh target, and used with ``PYTHONPATH`` pointing there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None,
                                reason="needs the git checkout (the wheel is built from its tracked files)")


def _copy_tracked(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src, out = ROOT / name, dest / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree, not yet committed
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            out.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, out)


def _tracked(folder: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", folder], cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name and (ROOT / name).exists()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("installed")
    _copy_tracked(tmp / "src")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(tmp / "src")],
                   check=True, capture_output=True)
    wheel = next((tmp / "dist").glob("moezoo-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)], check=True,
                   capture_output=True)
    return tmp


def test_the_wheel_carries_every_config_and_shipped_file(installed):
    wheel = next((installed / "dist").glob("moezoo-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in (ROOT / "configs").rglob("*.yaml"):
        assert f"moezoo/shipped/configs/{config.relative_to(ROOT / 'configs').as_posix()}" in names
    for file in (ROOT / "data").glob("*/*"):
        assert f"moezoo/shipped/data/{file.relative_to(ROOT / 'data').as_posix()}" in names
    assert "moezoo/assets/tokenizer/tokenizer.json" in names
    for file in _tracked("checkpoints"):  # the shipped zoo: the README and every model's files
        assert f"moezoo/shipped/{file}" in names
    assert "moezoo/shipped/checkpoints/README.md" in names


def test_the_quickstart_runs_from_the_installed_package(installed, tmp_path):
    site = installed / "site"
    env = {**os.environ, "PYTHONPATH": str(site), "MOEZOO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("MOEZOO_DATA", None)
    probe = ("import json, moezoo; from moezoo.shipped import shipped_config; "
             "from moezoo.data.shards import shipped_dataset; "
             "print(json.dumps([moezoo.__file__, str(shipped_config('configs/quickstart.yaml')), "
             "str(shipped_dataset('shapes-vqa'))]))")
    paths = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                                      text=True, check=True).stdout)
    assert all(Path(p).resolve().is_relative_to(site.resolve()) for p in paths), paths

    run = subprocess.run(
        [sys.executable, "-m", "moezoo", "fit", "-c", "configs/quickstart.yaml",  # the README's command, elsewhere
         "--trainer.default_root_dir", "run", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.max_steps", "2", "--data.batch_size", "8", "--data.train_data.n_train", "64",
         "--trainer.limit_val_batches", "1", "--trainer.callbacks+=moezoo.train.eval_callbacks.FinalEvaluation",
         "--trainer.callbacks.init_args.limit", "8"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "final_eval.json").read_text())
    assert "vqa_accuracy" in report["results"]["shapes_vqa"]
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "configs").exists() and not (tmp_path / "data").exists()


def test_the_shipped_zoo_loads_by_name_from_the_installed_package(installed, tmp_path):
    """Offline, from another directory: the registry finds the wheel's checkpoints and loads every model by name."""
    site = installed / "site"
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MOEZOO_CHECKPOINTS", None)
    probe = ("import json, moezoo; from moezoo.shipped import checkpoints_root; "
             "names = [n for n in moezoo.list_models(pretrained=True) if moezoo.registry.pretrained_cfg(n).source "
             "== 'shipped']; loaded = [type(moezoo.load(n)).__name__ for n in names]; "
             "print(json.dumps([str(checkpoints_root()), names, loaded]))")
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    root, names, loaded = json.loads(run.stdout.splitlines()[-1])
    assert Path(root).resolve().is_relative_to(site.resolve()) and Path(root, "README.md").is_file()
    assert names == sorted(Path(f).parent.name for f in _tracked("checkpoints") if f.endswith("/pretrained.json"))
    assert len(loaded) == len(names) and set(loaded) <= {"MultimodalMoEForCausalLM", "MoEForCausalLM"}
