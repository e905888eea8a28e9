"""``train --deterministic``: deterministic kernels for the length of a run, the operations without one named,
torch's settings put back after it, and the fingerprints of runs saved before the setting unchanged."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch

from rankdistill.training import DataConfig, LossConfig, ModelConfig, OptimConfig, RuntimeConfig, TrainConfig, train
from rankdistill.training.determinism import CUBLAS_WORKSPACE, NONDETERMINISTIC, deterministic_kernels
from test_training_fixtures import same_weights, scifact_groups, scifact_scores  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def _torch_settings() -> tuple:
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
            os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


ALERT = "{}" + NONDETERMINISTIC + ", but you set 'torch.use_deterministic_algorithms(True, warn_only=True)'."
"""torch's alert under ``warn_only=True`` (raised at every call of the operation); on a CPU no operation of
training raises one, so the tests raise it themselves."""
CUBLAS = ("Deterministic behavior was enabled with either `torch.use_deterministic_algorithms(True)` or "
          "`at::Context::setDeterministicAlgorithms(true)`, but this operation is not deterministic because it uses "
          "CuBLAS and you have CUDA >= 10.2.")


def test_kernels_are_asked_for_inside_the_block_and_put_back_after(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _torch_settings()
    assert before[0] is False
    with deterministic_kernels() as alerts:
        assert _torch_settings() == (True, True, False, True, CUBLAS_WORKSPACE)
        assert alerts.names() == []
    assert _torch_settings() == before
    for kept in (":16:8", ":4096:8"):  # the values torch accepts are left as the environment has them
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", kept)
        with deterministic_kernels():
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == kept
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == kept
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:2:16:8")  # one it refuses is replaced for the block
    with deterministic_kernels():
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:2:16:8"
    with pytest.raises(RuntimeError, match="boom"), deterministic_kernels():
        raise RuntimeError("boom")
    assert _torch_settings()[:4] == before[:4]
    with deterministic_kernels(on=False) as alerts:
        assert _torch_settings()[:4] == before[:4]
    assert alerts.names() == []


def test_operations_without_a_deterministic_kernel_are_named_and_other_warnings_still_shown():
    with pytest.warns(UserWarning, match="something else") as shown:
        with deterministic_kernels() as alerts:
            warnings.warn(ALERT.format("scatter_add_cuda_kernel"), UserWarning, stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
            warnings.warn(ALERT.format("embedding_dense_backward_cuda"), UserWarning, stacklevel=1)
            warnings.warn(ALERT.format("scatter_add_cuda_kernel"), UserWarning, stacklevel=1)
            warnings.warn(CUBLAS, UserWarning, stacklevel=1)
            assert alerts.names() == ["scatter_add_cuda_kernel", "embedding_dense_backward_cuda",
                                      "cuBLAS (CUBLAS_WORKSPACE_CONFIG)"]
    assert [str(w.message) for w in shown] == ["something else"]  # the alerts are named, not shown


def test_other_warnings_keep_the_filters_in_place():
    """Only torch's alerts are taken; the rest go through the filters outside the block, as without it: a
    warning raised at every step is shown once ("default"), and "error" still stops the run on it (but not on
    an alert)."""
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        with deterministic_kernels() as alerts:
            for _ in range(5):
                warnings.warn("at every step", UserWarning, stacklevel=1)
                warnings.warn(ALERT.format("cumsum_cuda_kernel"), UserWarning, stacklevel=1)
        assert [str(w.message) for w in shown] == ["at every step"] and alerts.names() == ["cumsum_cuda_kernel"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="stop here"), deterministic_kernels() as alerts:
            warnings.warn(ALERT.format("cumsum_cuda_kernel"), UserWarning, stacklevel=1)
            warnings.warn("stop here", UserWarning, stacklevel=1)
    assert alerts.names() == ["cumsum_cuda_kernel"]


def _recorder(seen: list[bool]):
    """An ``on_step`` that records whether deterministic kernels were asked for at each step."""
    return lambda step, loss: seen.append(torch.are_deterministic_algorithms_enabled())


def _config(scifact_dir, groups, scores, model, out, deterministic: bool, arch: str = "cross",
            device: str = "auto", save_every: int = 500) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(str(scifact_dir), str(groups), scores=str(scores), group_size=4),
        model=ModelConfig(arch=arch, model=str(model), max_doc_length=64, max_length=96),
        loss=LossConfig("kl"),
        optim=OptimConfig(budget_docs=64, batch_size=4, lr=1e-4, seed=1),
        runtime=RuntimeConfig(str(out), progress=False, device=device, deterministic=deterministic,
                              save_every=save_every),
    ).validate()


def test_a_deterministic_run_records_it_and_trains_the_same_weights_on_a_cpu(
        scifact_dir, scifact_groups, scifact_scores, tiny_cross_encoder_dir, tmp_path):  # noqa: F811
    before = _torch_settings()
    runs: dict = {}
    modes: dict = {}
    for on in (False, True):
        cfg = _config(scifact_dir, scifact_groups[0], scifact_scores, tiny_cross_encoder_dir, tmp_path / str(on), on)
        runs[on] = train(cfg, on_step=_recorder(modes.setdefault(on, [])))
        assert _torch_settings() == before
    assert modes == {False: [False] * 4, True: [True] * 4}  # the 4 steps ran with the setting asked for
    summary = json.loads((runs[True].output / "training.json").read_text())
    assert summary["deterministic"] is True and summary["nondeterministic_ops"] == []
    assert "deterministic" not in json.loads((runs[False].output / "training.json").read_text())
    # a CPU is deterministic either way: the setting changes which kernels run, not what is computed
    assert runs[True].losses == runs[False].losses
    assert same_weights(runs[True].output, runs[False].output)


def test_a_resumed_run_keeps_the_operations_named_before_its_checkpoint(
        scifact_dir, scifact_groups, scifact_scores, tiny_cross_encoder_dir, tmp_path):  # noqa: F811
    cfg = _config(scifact_dir, scifact_groups[0], scifact_scores, tiny_cross_encoder_dir, tmp_path, True,
                  save_every=2)

    def first_session(step: int, loss: float) -> None:
        if step == 1:  # as torch would, for an operation without a deterministic kernel
            warnings.warn(ALERT.format("index_put_cuda"), UserWarning, stacklevel=1)
        if step == 3:  # after the checkpoint of step 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=first_session)
    result = train(cfg)
    assert result.resumed_from == 2
    assert json.loads((result.output / "training.json").read_text())["nondeterministic_ops"] == ["index_put_cuda"]


def test_runs_saved_before_the_setting_keep_their_fingerprint():
    cfg = TrainConfig(data=DataConfig("scifact", "/g/groups.jsonl", scores="/g/scores.db"),
                      model=ModelConfig(arch="cross", model="m"), loss=LossConfig("kl"),
                      optim=OptimConfig(budget_docs=1000, seed=3), runtime=RuntimeConfig("/out"))
    assert cfg.fingerprint() == "9e97d74769e78f03"  # computed by the code before the setting existed
    on = TrainConfig(cfg.data, cfg.optim, RuntimeConfig("/out", deterministic=True), cfg.model, cfg.loss)
    assert on.fingerprint() != cfg.fingerprint()
    saved = cfg.to_dict()
    del saved["runtime"]["deterministic"]  # a config saved before the setting
    assert cfg.differences(saved) == [] and on.differences(saved) == ["runtime.deterministic"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (the device session runs it)")
@pytest.mark.parametrize("arch", ["bi", "cross"])
def test_two_deterministic_gpu_runs_train_the_same_bytes(
        arch, scifact_dir, scifact_groups, scifact_scores, tiny_bert_dir, tiny_cross_encoder_dir, tmp_path):  # noqa: F811
    model = tiny_cross_encoder_dir if arch == "cross" else tiny_bert_dir
    runs, modes = [], []
    for i in range(2):
        runs.append(train(_config(scifact_dir, scifact_groups[0], scifact_scores, model, tmp_path / str(i), True,
                                  arch=arch, device="cuda"),
                          on_step=_recorder(modes)))
    assert modes == [True] * 8  # the mode was on at every step of both runs
    summary = json.loads((runs[0].output / "training.json").read_text())
    assert summary["nondeterministic_ops"] == [], summary["nondeterministic_ops"]
    assert runs[0].losses == runs[1].losses
    assert same_weights(runs[0].output, runs[1].output)
