"""Shared builders for the training, rerank and CLI tests (no tests here).

Groups are built from SciFact train qrels plus random corpus documents (not from the mining module), and
teacher scores are synthetic but deterministic: the positive gets 4 + u, negatives N(0, 1.5).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from rankdistill.data.groups import Group, write_groups


def build_groups(dataset_dir: Path, out: Path, *, n_queries: int = 24, pool: int = 3, seed: int = 0,
                 split: str = "train") -> list[Group]:
    """One group per judged query: its judged positives and ``pool`` random non-relevant documents."""
    from rankdistill.data import load_dataset

    ds = load_dataset(str(dataset_dir))
    qrels = ds.qrels(split)
    ids = ds.corpus.ids()
    rng = random.Random(seed)
    groups = []
    for qid in sorted(qrels, key=lambda q: (len(q), q))[:n_queries]:
        positives = sorted(d for d, r in qrels[qid].items() if r > 0)
        negatives: list[str] = []
        while len(negatives) < pool:
            d = rng.choice(ids)
            if d not in qrels[qid] and d not in negatives:
                negatives.append(d)
        groups.append(Group(qid, positives, negatives, "random", seed))
    write_groups(groups, out)
    return groups


def build_scores(groups: list[Group], path: Path, *, seed: int = 0, teacher: str = "synthetic-ce",
                 override: dict | None = None, skip: set | None = None) -> Path:
    """A score store with one teacher scoring every (query, document) of the groups."""
    from rankdistill.teachers import ScoreStore

    rng = random.Random(seed)
    rows = []
    for g in groups:
        for d in g.positive_ids:
            rows.append((g.query_id, d, 4.0 + rng.random()))
        for d in g.negative_ids:
            rows.append((g.query_id, d, rng.gauss(0.0, 1.5)))
    if override:
        rows = [(q, d, override.get((q, d), s)) for q, d, s in rows]
    if skip:
        rows = [r for r in rows if (r[0], r[1]) not in skip]
    with ScoreStore(path) as store:
        store.put(teacher, rows)
        store.set_teacher_info(teacher, {"model": "synthetic", "score": "log-odds"})
    return path


def no_dropout_copy(model_dir: Path, out: Path) -> Path:
    """A copy of a model folder with dropout off (so two processes see the same forward pass)."""
    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    config = json.loads((out / "config.json").read_text())
    config["hidden_dropout_prob"] = 0.0
    config["attention_probs_dropout_prob"] = 0.0
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="session")
def scifact_groups(scifact_dir, tmp_path_factory) -> tuple[Path, list[Group]]:
    path = tmp_path_factory.mktemp("groups") / "groups.jsonl"
    return path, build_groups(scifact_dir, path)


@pytest.fixture(scope="session")
def scifact_scores(scifact_groups, tmp_path_factory) -> Path:
    return build_scores(scifact_groups[1], tmp_path_factory.mktemp("scores") / "scores.db")


def weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)
