"""DDP on CPU: two gloo processes under torchrun against one process holding the whole batch.

The two-process run (batch 2 per process x 2 processes, accumulation 2) sees the same groups per step as
the one-process run (batch 4, accumulation 2); with dropout off, in-batch negatives gathered across the
processes, and gradients averaged by DDP, the realised budget must be equal and the loss curve the same up
to float rounding.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rankdistill.cli import main
from test_training_fixtures import no_dropout_copy, scifact_groups, weights  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def _args(scifact_dir, groups, model, out, batch) -> list[str]:
    # groups per step = 4 either way; 320 documents / (4 x 2 accumulation... ) see the budget assertions
    return ["train", "--dataset", str(scifact_dir), "--groups", str(groups), "--model", str(model),
            "--arch", "bi", "--loss", "infonce", "--temperature", "0.5", "--group-size", "4",
            "--budget-docs", "330", "--batch-size", str(batch), "--grad-accum", "2", "--lr", "2e-3",
            "--max-doc-length", "64", "--output", str(out)]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(scifact_dir, scifact_groups, tiny_bert_dir, tmp_path,  # noqa: F811
                                              caplog):
    model = no_dropout_copy(tiny_bert_dir, tmp_path / "model")
    groups = scifact_groups[0]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "rankdistill.cli", *_args(scifact_dir, groups, model, ddp, batch=2)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])  # only rank 0 prints its result

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with caplog.at_level("INFO", logger="rankdistill.training.engine"):
            assert main(_args(scifact_dir, groups, model, tmp_path / "single", batch=4)) == 0
    finally:
        torch.set_num_threads(before)
    # each process tokenised about two halves' worth of the documents, not all of them (rank 0 logs its count)
    every = int(re.search(r"tokenised \d+ queries and (\d+) documents once", caplog.text).group(1))
    own, here = map(int, re.search(r"of the (\d+) documents this process trains on, (\d+) here",
                                   proc.stderr).groups())
    assert own < every and here < every
    one = json.loads((tmp_path / "single" / "training.json").read_text())
    two = json.loads((ddp / "training.json").read_text())
    # budget: 8 groups x 4 documents = 32 per step either way (2 x 2 x 2 or 4 x 2 x 1); 330 -> 10 steps, 320 docs
    assert (two["world_size"], two["batch_size"], two["docs_per_step"]) == (2, 2, 32)
    assert (one["world_size"], one["batch_size"], one["docs_per_step"]) == (1, 4, 32)
    assert one["steps"] == two["steps"] == printed["steps"] == 10
    assert one["realised_docs"] == two["realised_docs"] == 320
    assert two["in_batch_negatives"] is True

    def curve(path):
        return [float(line.split("\t")[1]) for line in (path / "losses.tsv").read_text().splitlines()[1:]]

    single, double = curve(tmp_path / "single"), curve(ddp)
    assert len(single) == len(double) == 10
    # the run must move (else equal curves prove nothing), and both must move the same way
    assert single[0] - single[-1] > 0.02
    assert double == pytest.approx(single, abs=2e-4)
    # the weight updates agree: Adam can amplify rounding in near-zero gradient coordinates, so compare the
    # updates as a whole (relative norm of their difference) rather than coordinate by coordinate
    w0, wa, wb = weights(model), weights(tmp_path / "single"), weights(ddp)
    keys = [k for k in wa if k in w0]
    da = torch.cat([(wa[k] - w0[k]).flatten() for k in keys])
    db = torch.cat([(wb[k] - w0[k]).flatten() for k in keys])
    print("relative update difference", float((da - db).norm() / da.norm()))
    assert float(da.norm()) > 0
    assert float((da - db).norm() / da.norm()) < 0.05
