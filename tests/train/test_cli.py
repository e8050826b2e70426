"""The training CLI: every config parses, recipes run a few steps, a run leaves a model dir and a Lightning
checkpoint that ``moezoo export`` turns into the same model, and resuming reads with weights_only=True."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import moezoo
from moezoo.cli import main
from moezoo.train.checkpoints import export_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "-c", str(config), "--print_config"])
    assert exit_.value.code in (0, None)
    assert "model:" in capsys.readouterr().out


def test_configs_are_found_by_name_from_anywhere_and_a_wrong_name_says_which_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the shipped ones are used
    for name in ("configs/quickstart.yaml", "quickstart", "three_stage/1_align.yaml"):
        with pytest.raises(SystemExit) as exit_:
            main(["fit", "-c", name, "--print_config"])
        assert exit_.value.code in (0, None)
    assert main(["fit", "-c", "configs/quickstrat.yaml"]) == 2
    err = capsys.readouterr().err
    assert "no config 'configs/quickstrat.yaml'" in err and "did you mean quickstart?" in err and "text_moe_lm" in err


@pytest.mark.parametrize("line, bad, says", [
    ("stage: finetune", "stag: finetune", ["stag"]),  # a misspelt key
    ("batch_size: 16", "batch_size: many", ["batch_size", "many"]),  # a wrong type
    ("stage: finetune", "stage: pretrain", ["unknown stage 'pretrain'", "align", "finetune", "moe"]),  # a bad stage
])
def test_a_bad_config_fails_before_training_naming_the_key(tmp_path, monkeypatch, capsys, line, bad, says):
    from moezoo.train.cli import MoEZooCLI

    monkeypatch.chdir(ROOT)
    text = (ROOT / "configs" / "text_moe_lm.yaml").read_text()
    assert f"  {line}\n" in text
    config = tmp_path / "bad.yaml"
    config.write_text(text.replace(f"  {line}\n", f"  {bad}\n"))
    with pytest.raises((SystemExit, ValueError)) as error:
        MoEZooCLI(args=["-c", str(config), "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)],
                  run=False)
    message = str(error.value) + capsys.readouterr().err
    assert all(word in message for word in says), message
    assert not list(tmp_path.rglob("*.ckpt"))


def test_the_data_takes_the_models_processor(monkeypatch, capsys):
    """The config names its architecture once (model:); the data's processor is linked from the model."""
    from moezoo.train.cli import MoEZooCLI

    monkeypatch.chdir(ROOT)
    cli = MoEZooCLI(args=["-c", "configs/three_stage/1_align.yaml", "--trainer.logger", "false"], run=False)
    built = moezoo.create_model("film_cnn_moe_small", llm={"moe": None})  # the config's arch and overrides
    assert cli.datamodule.processor.to_dict() == built.processor.to_dict()
    assert cli.model.model is None  # the spec gave it: the model is built by the trainer, once
    with pytest.raises(SystemExit):
        MoEZooCLI(args=["-c", "configs/quickstart.yaml", "--data.processor", "mm_tiny_cnn"], run=False)
    assert "data.processor" in capsys.readouterr().err


def _fit(config: str, root: Path, *extra: str) -> None:
    assert main(["fit", "-c", str(ROOT / "configs" / config), "--trainer.default_root_dir", str(root),
                 "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(root),
                 "--trainer.enable_progress_bar", "false", *extra]) == 0


def test_quickstart_config_runs_exports_and_evaluates(tmp_path, monkeypatch):
    monkeypatch.setenv("MOEZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)  # the config's data_dir is relative to the repository
    _fit("quickstart.yaml", tmp_path, "--trainer.max_steps", "3", "--data.batch_size", "8",
         "--data.train_data.n_train", "64", "--trainer.limit_val_batches", "1",
         "--trainer.callbacks+=moezoo.train.eval_callbacks.FinalEvaluation",
         "--trainer.callbacks.init_args.limit", "8", "--trainer.log_every_n_steps", "1")
    report = json.loads((tmp_path / "final_eval.json").read_text())
    assert {"vqa_accuracy", "blank_vqa_accuracy", "majority_baseline/position"} <= set(report["results"]["shapes_vqa"])
    # The card's final training loss: the LM loss averaged over the run's last steps (all 3 here), as logged.
    logged = [float(r["train/lm_loss"]) for r in csv.DictReader(open(next(tmp_path.rglob("metrics.csv"))))
              if r.get("train/lm_loss")]
    assert report["train"]["steps_averaged"] == 3 and report["train"]["global_step"] == 3
    assert report["train"]["final_lm_loss"] == pytest.approx(sum(logged[-3:]) / 3, rel=1e-5)
    model = moezoo.load(tmp_path / "model")
    ckpt = sorted((tmp_path).rglob("*.ckpt"))[-1]
    assert load_checkpoint(ckpt)["global_step"] == 3
    exported = moezoo.load(export_checkpoint(ckpt, tmp_path / "exported"))
    ids = torch.tensor([[1, 5, 9, 12]])
    torch.testing.assert_close(exported(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)


def test_export_command_and_bad_checkpoints(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["export", str(bad), "--out", str(tmp_path / "m")]) == 2
    assert "not a readable Lightning checkpoint" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "m")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


class _StopAt:
    """Ends fit after ``step`` optimiser steps, as a killed run would stop (its checkpoint is saved)."""

    def __init__(self, step: int):
        import lightning.pytorch as pl

        class Stop(pl.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step >= step:
                    trainer.should_stop = True

        self.callback = Stop()


def _text_cli(root: Path, *extra: str):
    from moezoo.train.cli import MoEZooCLI

    return MoEZooCLI(args=["-c", str(ROOT / "configs" / "text_moe_lm.yaml"), "--trainer.default_root_dir", str(root),
                           "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                           "--trainer.max_steps", "6", "--trainer.callbacks", "[]", "--data.batch_size", "4",
                           "--data.max_length", "32", "--data.epoch_length", "16", "--trainer.limit_val_batches", "0",
                           # bitwise comparisons need the MoE dispatch's fixed thread split (see moezoo.moe.dispatch)
                           "--trainer.deterministic", "true", *extra], run=False)


@pytest.fixture
def restore_determinism():
    """Trainer(deterministic=True) switches torch's global flag on; later tests get it back as it was."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def test_fit_resumes_exactly_from_a_checkpoint(tmp_path, monkeypatch, restore_determinism):
    """6 steps straight == 3 steps, stop, then `fit --ckpt_path` for the rest (model, optimiser, schedule, data
    position across an epoch boundary: 16 samples / batch 4 = 4 batches an epoch)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    monkeypatch.chdir(ROOT)
    straight = _text_cli(tmp_path / "a")
    straight.trainer.fit(straight.model, datamodule=straight.datamodule)

    first = _text_cli(tmp_path / "b")
    saver = ModelCheckpoint(dirpath=tmp_path / "b" / "ckpt", every_n_train_steps=1, save_last=True,
                            save_top_k=-1)
    first.trainer.callbacks += [saver, _StopAt(5).callback]
    first.trainer.fit(first.model, datamodule=first.datamodule)
    assert first.trainer.global_step == 5
    resumed = _text_cli(tmp_path / "c")
    resumed.trainer.fit(resumed.model, datamodule=resumed.datamodule, ckpt_path=str(tmp_path / "b" / "ckpt" / "last.ckpt"),
                        weights_only=True)
    assert resumed.trainer.global_step == straight.trainer.global_step == 6
    for (name, a), b in zip(straight.model.model.state_dict().items(), resumed.model.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
