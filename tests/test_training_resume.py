"""Kill -9 in the middle of training, rerun the same command: the final weights equal an uninterrupted run's,
bit for bit (CPU, one thread)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rankdistill.cli import main
from test_training_fixtures import same_weights, scifact_groups, scifact_scores  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def _args(scifact_dir, groups, scores, model, out) -> list[str]:
    # 24 groups, batch 4, group 4: 16 documents per step; 480 documents = 30 steps (5 epochs)
    return ["train", "--dataset", str(scifact_dir), "--groups", str(groups), "--scores", str(scores),
            "--model", str(model), "--arch", "bi", "--loss", "kl", "--group-size", "4", "--budget-docs", "480",
            "--batch-size", "4", "--max-doc-length", "64", "--lr", "1e-4", "--save-every", "5",
            "--output", str(out)]


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_final_weights(scifact_dir, scifact_groups, scifact_scores,  # noqa: F811
                                                      tiny_bert_dir, tmp_path, caplog):
    args = lambda out: _args(scifact_dir, scifact_groups[0], scifact_scores, tiny_bert_dir, out)  # noqa: E731
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rankdistill.cli", "-q", *args(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = killed / "checkpoints" / "step-00000005"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), proc.stderr.read().decode()[-2000:]
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "training.json").exists()  # it really died mid-run

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with caplog.at_level("INFO"):
            assert main(args(killed)) == 0  # the same command resumes
        assert main(args(tmp_path / "full")) == 0  # an uninterrupted run
    finally:
        torch.set_num_threads(before)
    resumed = json.loads((killed / "training.json").read_text())["resumed_from_step"]
    assert resumed is not None and resumed % 5 == 0 and 5 <= resumed < 30
    assert f"resuming from step {resumed} of 30" in caplog.text
    assert same_weights(killed, tmp_path / "full")
    assert (killed / "losses.tsv").read_text() == (tmp_path / "full" / "losses.tsv").read_text()
    assert not (killed / "checkpoints").exists()  # removed once the model is saved
