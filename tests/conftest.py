"""Shared fixtures: the real collections in ../shared/data and tiny random models built from a config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RANKDISTILL_SHARED_DATA", REPO.parent / "shared" / "data"))


def _data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"test collection {path} is absent (set RANKDISTILL_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is absent (set RANKDISTILL_SHARED_DATA to the shared data folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    return _data("scifact")


@pytest.fixture(scope="session")
def cranfield_dir() -> Path:
    return _data("cranfield")


@pytest.fixture(scope="session")
def trecdl_manifest() -> Path:
    return _data("trec-dl") / "dataset.toml"


def _bundled_tokenizer():
    from transformers import AutoTokenizer

    from rankdistill.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(None))


def _tiny_config(vocab_size: int, **kw):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128, **kw)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT encoder (hidden 32) with the bundled MiniLM tokenizer, saved."""
    import torch
    from transformers import BertModel

    torch.manual_seed(0)
    tok = _bundled_tokenizer()
    model = BertModel(_tiny_config(tok.vocab_size))
    out = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT with a one-logit classification head, saved with the tokenizer."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    tok = _bundled_tokenizer()
    model = BertForSequenceClassification(_tiny_config(tok.vocab_size, num_labels=1))
    out = tmp_path_factory.mktemp("tiny-ce")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture()
def one_thread():
    """One intra-op torch thread: on two shared cores it is several times faster than two fighting over them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
