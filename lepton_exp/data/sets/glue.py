"""GLUE (Wang et al. 2019): ``data=glue data.task=<task>``, one of TASKS, with each task's
columns, labels (in the order of the Hugging Face ``glue`` data set, so Hub and local files
give the same ids) and metrics. GLUE's dev set is the test split, as papers report it (MNLI:
dev matched -> ``test/*``, dev mismatched -> ``test_mismatched/*``); validation is carved
from train (``data.val_size``). STS-B is a regression task: one output, MSE, Pearson and
Spearman correlation.

Read from ``data.root/<GLUE dir>/train.tsv`` + ``dev.tsv`` (MNLI: ``dev_matched.tsv`` +
``dev_mismatched.tsv``) in GLUE's own TSV layouts (``download_glue_data.py``), or with
``data.download=true`` from the Hugging Face Hub (``nyu-mll/glue``, needs network)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lepton_exp.config.checks import check_choice, text_data_checks
from lepton_exp.config.schemas import TextDataConfig
from lepton_exp.data.tables import Columns
from lepton_exp.errors import ConfigError, did_you_mean

HUB_ID = "nyu-mll/glue"


@dataclass(frozen=True)
class Task:
    """One GLUE task: where its texts and labels are, what they mean, how it is scored."""

    folder: str  # GLUE's directory name (download_glue_data.py)
    columns: Columns  # in GLUE's TSV files
    labels: tuple[str, ...]  # class names in HF glue's id order; () = regression (a score)
    metrics: tuple[str, ...]  # lepton_exp.training.classify.METRICS; the first picks the epoch
    hub_text: tuple[str, Optional[str]]  # (text, pair) columns on the Hub (labels: "label")
    layout: str  # GLUE's file layout, for messages
    # test split name -> (local dev file, Hub split): GLUE's labelled dev sets
    tests: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {"test": ("dev.tsv", "validation")})

    @property
    def regression(self) -> bool:
        return not self.labels


ENTAILMENT = ("entailment", "not_entailment")
BINARY = "labels 0/1"
TASKS = {
    "cola": Task("CoLA", Columns(text=3, label=1, header=False),
                 ("unacceptable", "acceptable"), ("mcc", "acc"), ("sentence", None),
                 "no header; columns: source, label 0/1, original mark, sentence"),
    "sst2": Task("SST-2", Columns("sentence", "label"), ("negative", "positive"), ("acc",),
                 ("sentence", None), f"header 'sentence label', {BINARY}"),
    "mrpc": Task("MRPC", Columns("#1 String", "Quality", "#2 String"),
                 ("not_equivalent", "equivalent"), ("f1_pos", "acc"), ("sentence1", "sentence2"),
                 f"header 'Quality #1 ID #2 ID #1 String #2 String', {BINARY}"),
    "qqp": Task("QQP", Columns("question1", "is_duplicate", "question2"),
                ("not_duplicate", "duplicate"), ("f1_pos", "acc"), ("question1", "question2"),
                f"header 'id qid1 qid2 question1 question2 is_duplicate', {BINARY}"),
    "stsb": Task("STS-B", Columns("sentence1", "score", "sentence2"), (),
                 ("pearson", "spearman"), ("sentence1", "sentence2"),
                 "a header with sentence1, sentence2 and score (0..5) last"),
    "mnli": Task("MNLI", Columns("sentence1", "gold_label", "sentence2"),
                 ("entailment", "neutral", "contradiction"), ("acc",), ("premise", "hypothesis"),
                 "a header with sentence1, sentence2 and gold_label last",
                 tests={"test": ("dev_matched.tsv", "validation_matched"),
                        "test_mismatched": ("dev_mismatched.tsv", "validation_mismatched")}),
    "qnli": Task("QNLI", Columns("question", "label", "sentence"), ENTAILMENT, ("acc",),
                 ("question", "sentence"), "header 'index question sentence label'"),
    "rte": Task("RTE", Columns("sentence1", "label", "sentence2"), ENTAILMENT, ("acc",),
                ("sentence1", "sentence2"), "header 'index sentence1 sentence2 label'"),
    "wnli": Task("WNLI", Columns("sentence1", "label", "sentence2"),
                 ("not_entailment", "entailment"), ("acc",), ("sentence1", "sentence2"),
                 f"header 'index sentence1 sentence2 label', {BINARY}"),
}


@dataclass
class Schema(TextDataConfig):
    task: Optional[str] = None  # one of TASKS


def check(cfg):
    task = cfg.data.task
    if task is None:
        yield f"data.task is not set: give one of {', '.join(TASKS)} (e.g. data.task=mnli)"
    else:
        yield check_choice("data.task", task, TASKS)
    yield from text_data_checks(cfg)


def task_of(cfg) -> Task:
    """The task of ``cfg`` (the data section), or a ConfigError listing the tasks."""
    name = cfg.task
    if name not in TASKS:
        raise ConfigError(f"data.task={name} is not a GLUE task{did_you_mean(str(name), TASKS)}:"
                          f" give one of {', '.join(TASKS)}")
    return TASKS[name]


def build(cfg):
    from lepton_exp.data.text import TextClassificationData

    task = task_of(cfg)
    return TextClassificationData(cfg, num_classes=len(task.labels) or 1, sentences=sentences,
                                  fingerprint=fingerprint, class_names=task.labels,
                                  pairs=task.columns.pair is not None, metrics=task.metrics,
                                  regression=task.regression)


def _files(cfg) -> Optional[dict[str, Path]]:
    """Split name -> local file; None when train.tsv is missing and data.download=true."""
    task = task_of(cfg)
    if not cfg.root:
        raise ConfigError("data.root is not set: give the directory holding GLUE's task "
                          f"directories ({task.folder}/train.tsv, ...), or data.download=true")
    folder = Path(cfg.root).expanduser() / task.folder
    files = {"train": folder / "train.tsv",
             **{name: folder / file for name, (file, _) in task.tests.items()}}
    if not files["train"].is_file() and cfg.download:
        return None
    for path in files.values():
        if not path.is_file():
            raise ConfigError(
                f"{path} not found: GLUE {task.folder} is expected as {folder}/"
                f"{{{','.join(p.name for p in files.values())}}} in GLUE's TSV layout "
                f"({task.layout}); point data.root at the directory holding {task.folder}/, "
                "or add data.download=true (Hugging Face Hub, online)")
    return files


def fingerprint(cfg) -> str:
    files = _files(cfg)
    if files is None:
        return json.dumps({"hub": HUB_ID, "task": cfg.task})
    return json.dumps({"task": cfg.task, **{
        name: [str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns]
        for name, path in files.items()}}, sort_keys=True)


# The teacher cache keys GLUE by its files too: an edited file trains a new teacher.
data_identity = fingerprint


def sentences(cfg) -> dict[str, tuple]:
    """Split name (train, test[, test_mismatched]) -> (texts[, pairs], labels)."""
    from lepton_exp.data.tables import read_files, read_hub

    task, files = task_of(cfg), _files(cfg)
    options = dict(cache_dir=Path(cfg.cache_dir).expanduser() / "datasets",
                   class_names=task.labels, regression=task.regression, keys=False,
                   hint=f"expected GLUE {task.folder}'s layout ({task.layout})")
    if files is not None:
        return read_files(files, task.columns, **options).sentences()
    text, pair = task.hub_text
    splits = {"train": "train", **{name: hub for name, (_, hub) in task.tests.items()}}
    return read_hub(HUB_ID, cfg.task, splits, Columns(text, "label", pair),
                    **options).sentences()
