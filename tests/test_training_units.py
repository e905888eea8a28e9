"""Pure parts of training: budget arithmetic, the deterministic plan, config validation, token templates."""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import numpy as np
import pytest

from rankdistill.errors import UserInputError
from rankdistill.training import Budget, DataConfig, LossConfig, ModelConfig, OptimConfig, RuntimeConfig, TrainConfig
from rankdistill.training.sampling import TrainGroup, TrainingPlan, hashed_seed, sample_group, shard

# --- budget ----------------------------------------------------------------------------------------------

def test_budget_counts_every_factor():
    # the paper's setting: batch 8 x accumulation 2 x 1 process x group 16 = 256 documents per step;
    # 12M documents -> 46,875 steps exactly (the paper's code, ignoring accumulation, trained 2x that)
    b = Budget(12_000_000, batch_size=8, grad_accum=2, world_size=1, group_size=16)
    assert b.docs_per_step == 256 and b.steps == 46_875 and b.realised_docs == 12_000_000
    # 4 processes of batch 2, no accumulation, group 8: 64 documents per step; 1000 -> 15 steps = 960 docs
    b = Budget(1000, batch_size=2, grad_accum=1, world_size=4, group_size=8)
    assert (b.groups_per_step, b.docs_per_step, b.steps, b.realised_docs) == (8, 64, 15, 960)
    assert b.warmup_steps(0.1) == 2  # round(1.5) = 2
    # equal budgets give equal documents seen across group sizes
    for g in (2, 4, 8, 16, 32):
        assert Budget(65_536, 8, 1, 1, g).realised_docs == 65_536


def test_budget_smaller_than_one_step_is_refused():
    with pytest.raises(UserInputError, match=r"--budget-docs 255 is smaller than one optimizer step \(256 documents"):
        Budget(255, batch_size=8, grad_accum=2, world_size=1, group_size=16)


# --- sampling ---------------------------------------------------------------------------------------------

GROUPS = [TrainGroup(f"q{i}", (f"p{i}", f"p{i}b") if i % 3 == 0 else (f"p{i}",),
                     tuple(f"n{i}-{j}" for j in range(10))) for i in range(12)]


def test_hashed_seed_is_stable_across_processes():
    # blake2b-64 of "0\x1fq1\x1f3" (little endian): fixed forever, unlike Python's salted hash()
    assert hashed_seed(0, "q1", 3) == hashed_seed("0", "q1", "3")
    expected = int.from_bytes(hashlib.blake2b(b"0\x1fq1\x1f3", digest_size=8).digest(), "little")
    assert hashed_seed(0, "q1", 3) == expected == 5313747773312698815
    assert hashed_seed(0, "q1", 3) != hashed_seed(0, "q1", 4)


def test_sample_group_is_deterministic_per_query_and_epoch():
    g = GROUPS[0]
    a, b = sample_group(g, 5, seed=7, epoch=0), sample_group(g, 5, seed=7, epoch=0)
    assert a == b and len(a.doc_ids) == 5 and len(set(a.doc_ids)) == 5
    assert a.doc_ids[0] in g.positive_ids and not set(a.doc_ids[1:]) & set(g.positive_ids)
    # negatives rotate with the epoch (10 choose 4: equal draws in 5 epochs would be a broken seed)
    draws = {sample_group(g, 5, seed=7, epoch=e).doc_ids[1:] for e in range(5)}
    assert len(draws) == 5


def test_plan_visits_every_query_once_per_epoch_and_shards_cover_a_step():
    plan = TrainingPlan(GROUPS, group_size=4, groups_per_step=4, seed=1)
    assert plan.steps_per_epoch == 3
    epoch0 = [g.query_id for k in range(3) for g in plan.step(k)]
    assert sorted(epoch0) == sorted(g.query_id for g in GROUPS)
    assert [g.query_id for g in plan.step(3)] != [g.query_id for g in plan.step(0)]  # new order in epoch 1
    # 2 processes x batch 1 x 2 accumulation steps: the four shards partition the step, in order
    step = plan.step(4)
    parts = [shard(step, micro=m, rank=r, world_size=2, batch_size=1) for m in range(2) for r in range(2)]
    assert [g for p in parts for g in p] == step


def test_two_processes_split_each_micro_batch_of_one_process():
    # 1 process x batch 4 x accumulation 2 and 2 processes x batch 2 x accumulation 2 both take 8 groups per
    # step; micro-batch m of the single process is the union of the two processes' micro-batch m
    plan = TrainingPlan(GROUPS, group_size=3, groups_per_step=8, seed=5)
    for k in range(3):
        step = plan.step(k)
        for m in range(2):
            single = shard(step, micro=m, rank=0, world_size=1, batch_size=4)
            split = [g for r in range(2) for g in shard(step, micro=m, rank=r, world_size=2, batch_size=2)]
            assert single == split == step[4 * m:4 * m + 4]



@pytest.mark.parametrize(("bucket_steps", "steps"), [(1, 1), (3, 1), (3, 4), (3, 6), (1, 13), (4, 14)])
def test_groups_within_a_budget_cover_its_steps_and_little_more(bucket_steps, steps):
    """Training tokenised every document of every epoch the budget touches: 267,000 documents of 20,000
    groups for a 16-step run on 1M passages. Now only the groups the budget's steps can hold, found before
    the lengths that bucketing sorts by: whole windows of bucket_steps steps."""
    kw = dict(group_size=3, groups_per_step=2, seed=4, bucket_steps=bucket_steps)
    within = list(TrainingPlan(GROUPS, **kw).groups_within(steps))
    tokenised = {d: len(d) for g in within for d in g.doc_ids}  # what training tokenises, then sorts windows by
    plan = TrainingPlan(GROUPS, length_of=lambda sg: max(tokenised[d] for d in sg.doc_ids), **kw)
    drawn = [(g.query_id, g.doc_ids) for k in range(steps) for g in plan.step(k)]  # no KeyError: no other window
    assert set(drawn) <= {(g.query_id, g.doc_ids) for g in within}
    assert plan.pairs_seen(steps) == len({(q, d) for q, docs in drawn for d in docs})
    spe = plan.steps_per_epoch
    whole_windows = sum(min(spe, -(-min(spe, steps - e * spe) // bucket_steps) * bucket_steps)
                        for e in range(-(-steps // spe)))
    assert len(within) == 2 * whole_windows < 2 * (steps + bucket_steps)

def test_length_bucketing_sorts_within_windows_only():
    lengths = {g.query_id: int(g.query_id[1:]) for g in GROUPS}
    plan = TrainingPlan(GROUPS, group_size=2, groups_per_step=2, seed=3, bucket_steps=3,
                        length_of=lambda sg: lengths[sg.query_id])
    plain = TrainingPlan(GROUPS, group_size=2, groups_per_step=2, seed=3)
    steps = [plan.step(k) for k in range(6)]
    # each batch holds neighbours in length order (sorted window cut into steps)
    for batch in steps:
        a, b = (lengths[g.query_id] for g in batch)
        assert a >= b
    # the same queries per window of 3 steps as without bucketing: nothing is dropped or repeated
    for w in range(2):
        bucketed = Counter(g.query_id for k in range(3 * w, 3 * w + 3) for g in plan.step(k))
        unbucketed = Counter(g.query_id for k in range(3 * w, 3 * w + 3) for g in plain.step(k))
        assert bucketed == unbucketed


def test_pairs_seen_counts_distinct_pairs():
    plan = TrainingPlan(GROUPS, group_size=4, groups_per_step=4, seed=1)
    # one epoch: 12 groups x 4 documents, all distinct
    assert plan.pairs_seen(3) == 48
    # half an epoch: 6 groups... here 2 of 3 steps -> 8 groups x 4
    assert plan.pairs_seen(2) == 32


def test_draws_as_positions_are_the_draws_and_count_the_pairs_over_epochs():
    """pairs_seen kept a set of every (query, document) pair a budget sees (3 GB at 40M documents); it counts
    from the draws' positions in each pool now, which must be the same draws, several positives included."""
    import random as stdlib_random

    from rankdistill.training.sampling import hashed_seed, sample_indices

    rng = stdlib_random.Random(5)
    groups = [TrainGroup(f"q{i}", tuple(f"p{i}-{j}" for j in range(rng.randint(1, 3))),
                         tuple(f"n{i}-{j}" for j in range(rng.randint(4, 9)))) for i in range(10)]
    for g in groups:
        for epoch in range(4):
            old_rng = stdlib_random.Random(hashed_seed(3, g.query_id, epoch))  # sample_group before positions
            positive = g.positive_ids[0] if len(g.positive_ids) == 1 else old_rng.choice(g.positive_ids)
            old = (positive, *old_rng.sample(g.negative_ids, 3))
            assert sample_group(g, 4, 3, epoch).doc_ids == old
            i, js = sample_indices(g, 4, 3, epoch)
            assert (g.positive_ids[i], *(g.negative_ids[j] for j in js)) == old
    for bucket_steps in (1, 2):
        plan = TrainingPlan(groups, group_size=4, groups_per_step=3, seed=3, bucket_steps=bucket_steps,
                            length_of=lambda sg: len(sg.query_id))
        for steps in (1, 3, 7, 11):
            assert plan.pairs_seen(steps) == len({(g.query_id, d) for k in range(steps) for g in plan.step(k)
                                                  for d in g.doc_ids})
        pools = {g.query_id: g.positive_ids + g.negative_ids for g in groups}
        assert all(tuple(pools[g.query_id][j] for j in g.pool_positions) == g.doc_ids
                   for k in range(11) for g in plan.step(k))


def test_pairs_seen_draws_each_group_once(monkeypatch):
    """pairs_seen drew every group of its steps a second time to find the draws' positions in the pools."""
    from rankdistill.training import sampling

    groups = [TrainGroup(f"q{i}", ("p",), tuple(f"n{j}" for j in range(6))) for i in range(8)]
    plan = TrainingPlan(groups, group_size=4, groups_per_step=2, seed=1)
    draws = []
    real = sampling.sample_indices
    monkeypatch.setattr(sampling, "sample_indices", lambda *a: draws.append(a) or real(*a))
    assert plan.pairs_seen(4) == 8 * 4 and len(draws) == 8  # one epoch: 4 steps of 2 groups, each drawn once


# --- config -----------------------------------------------------------------------------------------------

def _config(**kw) -> TrainConfig:
    parts = {"data": DataConfig("d", "g.jsonl", scores="s.db"), "optim": OptimConfig(budget_docs=1000),
             "runtime": RuntimeConfig("out"), "model": ModelConfig(), "loss": LossConfig()}
    parts.update(kw)
    return TrainConfig(**parts)


def test_config_validation_messages():
    with pytest.raises(UserInputError, match="--loss kl needs teacher scores"):
        _config(data=DataConfig("d", "g.jsonl")).validate()
    _config(data=DataConfig("d", "g.jsonl"), loss=LossConfig("lce")).validate()  # no teacher needed
    with pytest.raises(UserInputError, match="in-batch negatives need --arch bi"):
        _config(model=ModelConfig(arch="cross"), loss=LossConfig("infonce", in_batch_negatives=True)).validate()
    with pytest.raises(UserInputError, match="--loss margin_mse takes no temperature option"):
        _config(loss=LossConfig("margin_mse", temperature=2.0)).validate()
    with pytest.raises(UserInputError, match="--margin-pairs 'every' is not one of pos_vs_negs, all_pairs"):
        _config(loss=LossConfig("margin_mse", pairs="every")).validate()
    with pytest.raises(UserInputError, match="unknown loss 'mse'; valid losses: infonce, kl"):
        _config(loss=LossConfig("mse")).validate()
    with pytest.raises(UserInputError, match="--group-size must be at least 2"):
        _config(data=DataConfig("d", "g.jsonl", scores="s", group_size=1)).validate()
    # each optimiser and runtime rule names its own flag and the value given
    for optim, message in ((OptimConfig(budget_docs=1000, lr=-1.0), "--lr must be positive, got -1.0"),
                           (OptimConfig(budget_docs=1000, head_lr=-1e-3), "--head-lr must be 0 or more, got -0.001"),
                           (OptimConfig(budget_docs=1000, warmup_ratio=1.0), "--warmup must be a share of the steps"),
                           (OptimConfig(budget_docs=1000, grad_accum=0), "--grad-accum must be at least 1, got 0"),
                           (OptimConfig(budget_docs=1000, max_grad_norm=-1.0), "--max-grad-norm must be 0 or more")):
        with pytest.raises(UserInputError, match=re.escape(message)):
            _config(optim=optim).validate()
    with pytest.raises(UserInputError, match="--keep-checkpoints must be at least 1, got 0"):
        _config(runtime=RuntimeConfig("out", keep_checkpoints=0)).validate()
    # configs built in Python: a value of the wrong type is named (it failed deep inside numpy, or not at
    # all: seed=None drew another order each run), as are a negative bucket or padding size and a bad device
    for part, message in ((OptimConfig(budget_docs="1000"), "OptimConfig.budget_docs must be int, got '1000'"),
                          (OptimConfig(budget_docs=1000, seed=None), "OptimConfig.seed must be int, got None"),
                          (OptimConfig(budget_docs=1000, head_lr="1e-3"), "OptimConfig.head_lr must be float or "
                                                                          "None, got '1e-3'"),
                          (DataConfig("d", "g.jsonl", scores="s", group_size=True), "DataConfig.group_size must "
                                                                                    "be int, got True"),
                          (RuntimeConfig("out", bucket_steps=-3), "--bucket-steps must be 0 or more, got -3"),
                          (RuntimeConfig("out", device="gpu"), "unknown device 'gpu'")):
        with pytest.raises(UserInputError, match=re.escape(message)):
            _config(**{type(part).__name__[:-6].lower(): part}).validate()
    # a numpy int or an int for a float passes, and the config is made plain so that it serialises
    config = _config(optim=OptimConfig(budget_docs=np.int64(1000), lr=np.float32(1e-4))).validate()
    assert type(config.optim.budget_docs) is int and type(config.optim.lr) is float
    assert len(config.fingerprint()) > 0
    assert issubclass(UserInputError, ValueError)  # library callers catch bad input as a ValueError


def test_in_batch_default_and_fingerprint():
    assert _config(loss=LossConfig("infonce")).in_batch_negatives
    assert not _config(loss=LossConfig("infonce"), model=ModelConfig(arch="cross")).in_batch_negatives
    assert not _config(loss=LossConfig("kl")).in_batch_negatives
    a = _config()
    # runtime-only settings do not change the fingerprint; the learning rate does
    assert a.fingerprint() == _config(runtime=RuntimeConfig("elsewhere", save_every=7, workers=3)).fingerprint()
    other = _config(optim=OptimConfig(budget_docs=1000, lr=1e-4))
    assert a.fingerprint() != other.fingerprint()
    assert other.differences(a.to_dict()) == ["optim.lr"]


def test_config_round_trip_and_unknown_keys():
    c = _config(loss=LossConfig("ranknet", targets="soft"))
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(UserInputError, match=r"unknown key\(s\) lrate in \[optim\]"):
        TrainConfig.from_dict({**c.to_dict(), "optim": {"budget_docs": 10, "lrate": 1}})


# --- tokens -----------------------------------------------------------------------------------------------

def test_cached_token_inputs_equal_the_tokenizers_own():
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from rankdistill.models import resolve_model
    from rankdistill.training.tokens import InputTemplate, TokenCache, encode_pairs, encode_singles

    tok = AutoTokenizer.from_pretrained(resolve_model(None))
    template = InputTemplate.from_tokenizer(tok)
    # BERT: [CLS]=101 a [SEP]=102 b [SEP]=102, segments 0 then 1
    assert (template.pair_prefix, template.pair_middle, template.pair_suffix) == ((101,), (102,), (102,))
    assert (template.first_type, template.second_type) == (0, 1)
    queries = {"q1": "What is the role of p53 in cancer?", "q2": "aspirin"}
    docs = {"d1": "p53 is a tumour suppressor gene. " * 20, "d2": "Cats are not dogs."}
    qc, dc = TokenCache(tok, 32, "q"), TokenCache(tok, 256, "d")
    assert qc.add(queries.items(), progress=False) == 2 and qc.add(queries.items(), progress=False) == 0
    dc.add(docs.items(), progress=False)
    got = encode_pairs(template, qc, dc, [("q1", "d1"), ("q2", "d2")], 48, tok.pad_token_id, pad_multiple=16)
    ref = tok([queries["q1"], queries["q2"]], [docs["d1"], docs["d2"]], truncation="only_second", max_length=48,
              padding="max_length", return_tensors="pt")
    assert torch.equal(got.input_ids, ref["input_ids"])
    assert torch.equal(got.token_type_ids, ref["token_type_ids"])
    assert torch.equal(got.attention_mask, ref["attention_mask"])
    single = encode_singles(template, dc, ["d2", "d1"], 40, tok.pad_token_id, pad_multiple=8)
    ref = tok([docs["d2"], docs["d1"]], truncation=True, max_length=40, padding="max_length", return_tensors="pt")
    assert torch.equal(single.input_ids, ref["input_ids"]) and single.input_ids.shape == (2, 40)
    # ids are stored once, compactly (BERT's 30,522 ids fit uint16), cut to the cache's token limit
    assert dc["d1"].dtype == np.uint16 and qc["q2"].tolist() == tok("aspirin", add_special_tokens=False)["input_ids"]
    short_cache = TokenCache(tok, 16, "d")
    short_cache.add(docs.items(), progress=False)
    assert short_cache.length("d1") == 16 and short_cache["d1"].tolist() == dc["d1"][:16].tolist()
    # dynamic padding: a batch of short texts pads to its own longest, rounded up to a multiple of 8
    short = encode_singles(template, dc, ["d2"], 40, tok.pad_token_id, pad_multiple=8)
    assert short.input_ids.shape == (1, 8) and int(short.attention_mask.sum()) == 2 + len(dc["d2"])


def test_head_learning_rate_applies_to_pooler_and_classifier_only(tiny_cross_encoder_dir):
    from rankdistill.models.cross_encoder import CrossEncoder
    from rankdistill.training.engine import _optimizer, is_head_parameter

    model = CrossEncoder.from_pretrained(str(tiny_cross_encoder_dir))
    cfg = TrainConfig(DataConfig("d", "g.jsonl"), OptimConfig(budget_docs=64, lr=1e-5, head_lr=1e-3),
                      RuntimeConfig(output="o"), ModelConfig(arch="cross"), LossConfig(name="lce"))
    opt, sched = _optimizer(model, cfg, steps=10, warmup=0, fused=False)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    heads = [n for n, _ in model.named_parameters() if is_head_parameter(n)]
    assert sorted(heads) == sorted(n for n, _ in model.named_parameters() if ".pooler." in n or ".classifier." in n)
    assert len(heads) == 4  # pooler dense weight + bias, classifier weight + bias
    for name, p in model.named_parameters():
        assert lr_of[id(p)] == (1e-3 if name in heads else 1e-5), name
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert all(decay[id(p)] == 0.0 for n, p in model.named_parameters() if n.endswith(".bias"))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    sched.step()
    assert sorted({round(g["lr"], 12) for g in opt.param_groups}) == [0.9e-5, 0.9e-3]  # linear decay, same factor


def test_token_memo_is_shared_by_caches_of_equal_tokenizers_and_limits(tmp_path):
    """A second cache (another student's saved copy of the same tokenizer) takes its ids from the process
    memo, without calling the tokenizer; another limit or another tokenizer definition does not."""
    from transformers import AutoTokenizer

    from rankdistill.models import resolve_model
    from rankdistill.training import tokens

    tokens.clear_token_memo()
    tok = AutoTokenizer.from_pretrained(resolve_model(None))
    tok.save_pretrained(tmp_path / "copy")
    texts = {f"d{i}": f"document {i} on p53 and tumour suppression " * (i + 1) for i in range(20)}
    first = tokens.TokenCache(tok, 24)
    assert first.add(texts.items(), progress=False) == 20

    class Counting:
        """The copied tokenizer, counting its calls."""

        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __len__(self):
            return len(self.inner)

        def __call__(self, *args, **kwargs):
            self.calls += 1
            return self.inner(*args, **kwargs)

    copy = Counting(AutoTokenizer.from_pretrained(tmp_path / "copy"))
    second = tokens.TokenCache(copy, 24)
    assert second.add(((f"k{k}", t) for k, t in texts.items()), progress=False) == 20
    assert copy.calls == 0
    assert all(second[f"k{k}"].tolist() == first[k].tolist() for k in texts)
    longer = tokens.TokenCache(copy, 48)
    longer.add(texts.items(), progress=False)
    assert copy.calls == 1 and len(longer["d19"]) == 48 > len(first["d19"]) == 24
    tokens.clear_token_memo()



def test_token_cache_reads_its_texts_a_few_batches_at_a_time():
    """Every text to tokenise was collected first: at MS MARCO scale every document of the training pools, in
    memory at once. Texts are now read eight batches at a time, with the same ids and the same count (a key
    repeated in a later window is not added again)."""
    from transformers import AutoTokenizer

    from rankdistill.models import resolve_model
    from rankdistill.training import tokens

    tokens.clear_token_memo()
    tok = AutoTokenizer.from_pretrained(resolve_model(None))
    texts = [(f"d{i}", f"passage {i} about flutter of wings " * (1 + i % 4)) for i in range(50)]
    read = [0]
    read_at_first_call = []

    def items():
        for kv in [*texts, *texts[:5]]:
            read[0] += 1
            yield kv

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __len__(self):
            return len(self.inner)

        def __call__(self, *args, **kwargs):
            read_at_first_call.append(read[0])
            return self.inner(*args, **kwargs)

    windowed = tokens.TokenCache(Counting(tok), 16)
    assert windowed.add(items(), batch_size=2, progress=False, total=55) == 50
    assert read_at_first_call[0] == 16 and read[0] == 55
    tokens.clear_token_memo()
    whole = tokens.TokenCache(tok, 16)
    assert whole.add(texts, progress=False) == 50
    assert all(windowed[k].tolist() == whole[k].tolist() for k, _ in texts)
    tokens.clear_token_memo()

def test_padding_rounds_up_but_not_past_the_token_limit():
    """A model with 100 positions and max_length 100: rounding 100 up to 104 overran its position table."""
    import numpy as np

    from rankdistill.teachers.batching import pad_batch as pad_pairs
    from rankdistill.training.tokens import pad_batch

    seqs = [[1, 2, 3], [1, 2, 3, 4, 5]]
    assert pad_batch(seqs, 0, pad_multiple=8).input_ids.shape == (2, 8)
    assert pad_batch(seqs, 0, pad_multiple=8, limit=6).input_ids.shape == (2, 6)
    assert pad_batch(seqs, 0, pad_multiple=8, limit=4).input_ids.shape == (2, 5)  # never below the longest
    arrays = [np.array(s) for s in seqs]
    assert pad_pairs(np.arange(2), arrays, None, 0, 8).input_ids.shape == (2, 8)
    assert pad_pairs(np.arange(2), arrays, None, 0, 8, limit=6).input_ids.shape == (2, 6)
