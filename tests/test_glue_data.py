"""GLUE data loading: the real GLUE files, the bundled sample, the hub path, and bad input."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from m2bench import data as mdata
from m2bench.errors import ConfigError, DataError
from tasks.glue import data as gd
from tasks.glue.data import load_glue

GLUE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "glue"


@pytest.fixture(autouse=True)
def _no_data_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("M2BENCH_DATA", raising=False)


def _write(root: Path, rel: str, lines: list[str]) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --- the real GLUE files ------------------------------------------------------------------------

# first data row of each dev file, read off the files by eye: (text_a, text_b, label)
FIRST_DEV_ROWS = {
    "cola": ("The sailors rode the breeze clear of the rocks.", None, 1),
    "sst2": ("it 's a charming and often affecting journey . ", None, 1),
    "mrpc": (
        "He said the foodservice pie business doesn't fit the company's long-term growth strategy.",
        '"The foodservice pie business does not fit our long-term growth strategy.',
        1,
    ),
    "stsb": ("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0),
    "rte": (
        "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, "
        "according to the Christopher Reeve Foundation.",
        "Christopher Reeve had an accident.",
        1,  # not_entailment
    ),
    "wnli": (
        "The drain is clogged with hair. It has to be cleaned.",
        "The hair has to be cleaned.",
        0,
    ),
    "qnli": (
        "What came into force after the new constitution was herald?",
        "As of that day, the new constitution heralding the Second Republic came into force.",
        0,  # entailment
    ),
}
DEV_ROWS = {
    "cola": 1043,
    "sst2": 872,
    "mrpc": 408,
    "stsb": 1500,
    "rte": 277,
    "wnli": 71,
    "qnli": 5463,
}
TRAIN_ROWS = {"cola": 8551, "mrpc": 3668, "stsb": 5749, "rte": 2490, "wnli": 635}


@pytest.mark.needs_data
@pytest.mark.parametrize("subtask", sorted(DEV_ROWS))
def test_real_dev_files(subtask: str) -> None:
    rows, prov = load_glue(subtask, "dev", data_dir=GLUE)
    assert len(rows) == DEV_ROWS[subtask]
    assert [r["idx"] for r in rows] == list(range(len(rows)))
    first = rows[0]
    assert (first["text_a"], first["text_b"], first["label"]) == FIRST_DEV_ROWS[subtask]
    path = GLUE / gd.LAYOUTS[subtask].folder / "dev.tsv"
    assert prov == {
        "data_source": f"dir:{path.resolve()}",
        "data_revision": f"sha256:{mdata.files_digest([path])}",
    }
    labels = {r["label"] for r in rows}
    if subtask == "stsb":
        assert min(labels) == 0.0 and max(labels) == 5.0
    else:
        assert labels == set(range(gd.NUM_LABELS[subtask]))


@pytest.mark.needs_data
@pytest.mark.parametrize("subtask", sorted(TRAIN_ROWS))
def test_real_train_files(subtask: str) -> None:
    rows, _ = load_glue(subtask, "train", data_dir=GLUE)
    assert len(rows) == TRAIN_ROWS[subtask]


@pytest.mark.needs_data
def test_last_rows_and_limit() -> None:
    rows, _ = load_glue("rte", "dev", data_dir=GLUE)
    last = (GLUE / "RTE" / "dev.tsv").read_text(encoding="utf-8").splitlines()[-1].split("\t")
    assert (rows[-1]["text_a"], rows[-1]["text_b"]) == (last[1], last[2])
    assert rows[-1]["label"] == {"entailment": 0, "not_entailment": 1}[last[3]]
    assert load_glue("rte", "dev", data_dir=GLUE, limit=5)[0] == rows[:5]
    assert load_glue("rte", "dev", data_dir=GLUE, limit=0)[0] == []


@pytest.mark.needs_data
def test_qnli_labels_follow_the_hub_convention() -> None:
    # validation_hf.tsv is GLUE QNLI dev as the hub stores it (int labels); dev.tsv has the strings
    hub = (GLUE / "QNLI" / "validation_hf.tsv").read_text(encoding="utf-8").splitlines()[1:]
    rows, _ = load_glue("qnli", "dev", data_dir=GLUE)
    assert [(r["text_a"], r["text_b"], r["label"]) for r in rows] == [
        (q, s, int(label)) for q, s, label in (line.split("\t") for line in hub)
    ]


@pytest.mark.needs_data
def test_available_subtasks_of_a_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert gd.available(GLUE) == ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")
    assert gd.available(sample=True) == ("qnli", "wnli")
    assert gd.available() == ()  # hub: all
    (tmp_path / "glue").symlink_to(GLUE)
    monkeypatch.setenv("M2BENCH_DATA", str(tmp_path))
    rows, prov = load_glue("wnli", "dev")  # $M2BENCH_DATA/glue before the hub
    assert len(rows) == 71 and prov["data_source"].startswith("dir:")


# --- formats and label mapping on small files ---------------------------------------------------

MNLI_TRAIN = (
    "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
    "sentence1_parse sentence2_parse sentence1 sentence2 label1 gold_label"
).split()
MNLI_DEV = MNLI_TRAIN[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]


def _mnli_line(i: int, label: str, n_labels: int) -> str:
    return "\t".join([str(i), "1", "1e", "fiction", "(a)", "(b)", "(ROOT a)", "(ROOT b)",
                      f"premise {i}", f"hypothesis {i}", *[label] * n_labels])  # fmt: skip


def test_mnli_splits_and_labels(tmp_path: Path) -> None:
    _write(tmp_path, "MNLI/train.tsv", ["\t".join(MNLI_TRAIN), _mnli_line(0, "neutral", 2)])
    for name in ("dev_matched", "dev_mismatched"):
        lines = [_mnli_line(i, lab, 6) for i, lab in enumerate(gd.LABEL_NAMES["mnli"])]
        _write(tmp_path, f"MNLI/{name}.tsv", ["\t".join(MNLI_DEV), *lines])
    assert gd.eval_splits("mnli") == ("dev_matched", "dev_mismatched")
    assert gd.eval_splits("rte") == ("dev",)
    train, _ = load_glue("mnli", "train", data_dir=tmp_path)
    assert train == [{"idx": 0, "text_a": "premise 0", "text_b": "hypothesis 0", "label": 1}]
    dev, _ = load_glue("mnli", "dev_mismatched", data_dir=tmp_path)
    assert [r["label"] for r in dev] == [0, 1, 2]  # entailment, neutral, contradiction
    with pytest.raises(ConfigError, match="no split 'dev'; splits: train, dev_matched"):
        load_glue("mnli", "dev", data_dir=tmp_path)


def test_qqp_and_mrpc_formats(tmp_path: Path) -> None:
    head = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    _write(
        tmp_path, "QQP/dev.tsv", [head, '5\t11\t12\tWhy "x"?\tWhy x?\t1', "6\t13\t14\tA?\tB?\t0"]
    )
    rows, _ = load_glue("qqp", "dev", data_dir=tmp_path)
    assert [(r["text_a"], r["label"]) for r in rows] == [('Why "x"?', 1), ("A?", 0)]
    # the GLUE MRPC files start with a byte-order mark
    path = tmp_path / "MRPC" / "dev.tsv"
    _write(
        tmp_path, "MRPC/dev.tsv", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String", "0\t1\t2\ta\tb"]
    )
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_glue("mrpc", "dev", data_dir=tmp_path)[0][0]["label"] == 0


# --- bad input: one line naming file and line --------------------------------------------------

RTE_HEAD = "index\tsentence1\tsentence2\tlabel"
STSB_HEAD = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
STSB_ROW = "0\tmain-news\tMSRpar\t2012test\t0001\tnone\tnone\ta\tb\t"


@pytest.mark.parametrize(
    ("rel", "lines", "line_no", "match"),
    [
        ("RTE/dev.tsv", [RTE_HEAD, "0\ta\tb\tentailment", "1\ta\tb"], 3,
         "expected 4 tab-separated columns, found 3"),
        ("RTE/dev.tsv", [RTE_HEAD, "0\ta\tb\tentailment", "1\ta\tb\tmaybe"], 3,
         "label 'maybe' not in \\['entailment', 'not_entailment'\\]"),
        ("SST-2/dev.tsv", ["sentence\tlabel", "good .\t1", "bad .\t0", "odd .\t7"], 4,
         "label '7' not in \\['0', '1'\\]"),
        ("STS-B/dev.tsv", [STSB_HEAD, STSB_ROW + "5.5"], 2, "score '5.5' outside \\[0, 5\\]"),
        ("STS-B/dev.tsv", [STSB_HEAD, STSB_ROW + "high"], 2, "score 'high' is not a number"),
    ],
)  # fmt: skip
def test_bad_lines(tmp_path: Path, rel: str, lines: list[str], line_no: int, match: str) -> None:
    path = _write(tmp_path, rel, lines)
    subtask = {"RTE": "rte", "SST-2": "sst2", "STS-B": "stsb", "WNLI": "wnli", "CoLA": "cola"}
    with pytest.raises(DataError, match=match) as err:
        load_glue(subtask[rel.split("/")[0]], "dev", data_dir=tmp_path)
    message = str(err.value)
    assert message.startswith(f"{path} line {line_no}: ")
    assert "\n" not in message


@pytest.mark.parametrize("line_no", [2, 700])  # 700: past the first chunk the decoder reads
def test_non_utf8_byte_names_its_line(tmp_path: Path, line_no: int) -> None:
    good = [f"gj04\t1\t\tSentence number {i} is fine." for i in range(1, line_no)]
    path = _write(tmp_path, "CoLA/dev.tsv", good)
    with open(path, "ab") as f:
        f.write(b"gj04\t1\t\tBad \xff byte.\ngj04\t0\t\tAfter it.\n")
    with pytest.raises(DataError, match="not UTF-8 text") as err:
        load_glue("cola", "dev", data_dir=tmp_path)
    assert str(err.value).startswith(f"{path} line {line_no}: ")


@pytest.mark.parametrize("rel", ["WNLI/dev.tsv", "WNLI/train.tsv", "CoLA/dev.tsv"])
def test_file_without_rows_is_an_error(tmp_path: Path, rel: str) -> None:
    path = _write(tmp_path, rel, [RTE_HEAD] if rel.startswith("WNLI") else [])
    subtask, split = rel.split("/")[0].lower(), rel.split("/")[1].removesuffix(".tsv")
    with pytest.raises(DataError, match=f"^{re.escape(str(path))} (has no data rows|is empty)"):
        load_glue(subtask, split, data_dir=tmp_path)
    assert load_glue(subtask, split, data_dir=tmp_path, limit=0)[0] == []  # nothing asked


def test_scan_says_what_each_folder_lacks(tmp_path: Path) -> None:
    _write(tmp_path, "WNLI/train.tsv", [RTE_HEAD, "0\ta\tb\t1"])
    _write(tmp_path, "WNLI/dev.tsv", [RTE_HEAD, "0\ta\tb\t1"])
    _write(tmp_path, "QNLI/dev.tsv", ["index\tquestion\tsentence\tlabel"])
    found, skipped = gd.scan(tmp_path)
    assert found == ("wnli",)
    assert skipped["qnli"] == "QNLI/ lacks train.tsv"
    assert skipped["mnli"] == "no MNLI/"
    assert len(skipped) == 8
    with pytest.raises(DataError, match="is not a folder; expected the original GLUE layout"):
        gd.scan(tmp_path / "nowhere")


def test_empty_text_is_kept_with_a_warning(tmp_path: Path, caplog) -> None:
    """A few real QQP/MNLI rows have an empty text: they are scored, not dropped, and reported."""
    path = _write(tmp_path, "WNLI/dev.tsv", [RTE_HEAD, "0\ta\t \t1", "1\tb\tc\t0"])
    rows, _ = load_glue("wnli", "dev", data_dir=tmp_path)
    assert [r["text_b"] for r in rows] == [" ", "c"]
    assert f"{path} line 2: text 'sentence2' is empty" in caplog.text


def test_header_without_needed_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "RTE/dev.tsv", ["0\ta\tb\tentailment"])  # headerless (like val.tsv)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))} line 1: header lacks column"):
        load_glue("rte", "dev", data_dir=tmp_path)


def test_missing_file_names_files_and_the_three_ways(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_glue("rte", "dev", data_dir=tmp_path)
    message = str(err.value)
    assert f"{tmp_path / 'RTE' / 'dev.tsv'} not found" in message
    assert "DIR/RTE/train.tsv, DIR/RTE/dev.tsv" in message
    assert "nyu-mll/glue, config rte" in message and "HF cache" in message
    assert "--data-dir DIR" in message and "--sample" in message
    with pytest.raises(DataError, match="is not a folder"):
        load_glue("rte", "dev", data_dir=tmp_path / "nowhere")


def test_unknown_subtask_and_split() -> None:
    with pytest.raises(ConfigError, match="did you mean sst2"):
        load_glue("sst", "dev")
    with pytest.raises(ConfigError, match="no split 'test'"):
        load_glue("rte", "test")


# --- the bundled sample -------------------------------------------------------------------------


def test_sample_loads_offline() -> None:
    with mdata.offline():
        counts = {(t, s): len(load_glue(t, s, sample=True)[0])
                  for t in ("qnli", "wnli") for s in ("train", "dev")}  # fmt: skip
    assert counts == {("qnli", "train"): 400, ("qnli", "dev"): 200,
                      ("wnli", "train"): 635, ("wnli", "dev"): 71}  # fmt: skip
    rows, prov = load_glue("qnli", "dev", sample=True, limit=3)
    assert [r["idx"] for r in rows] == [0, 1, 2]
    assert rows[0]["text_a"] == "When was the deportation of Acadians?"
    assert prov["data_source"] == "sample:glue_sample/QNLI/dev.tsv"
    assert prov["data_revision"].startswith("sha256:")


def test_sample_checksums_match_its_source_md() -> None:
    folder = mdata.sample_dir(gd.SAMPLE)
    listed = re.findall(r"^([0-9a-f]{64})  (\S+)$", (folder / "SOURCE.md").read_text(), re.M)
    assert sorted((name, digest) for digest, name in listed) == sorted(gd.SAMPLE_SHA256)
    assert all(mdata.sha256(folder / name) == digest for name, digest in gd.SAMPLE_SHA256)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 300_000


def test_sample_detects_a_changed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(mdata.sample_dir(gd.SAMPLE), tmp_path / gd.SAMPLE)
    with open(tmp_path / gd.SAMPLE / "WNLI" / "dev.tsv", "a", encoding="utf-8") as f:
        f.write("71\tA.\tB.\t1\n")
    monkeypatch.setattr(mdata, "SAMPLE_ROOT", tmp_path)
    with pytest.raises(DataError, match="WNLI/dev.tsv has sha256"):
        load_glue("wnli", "dev", sample=True)


def test_sample_lacks_restricted_tasks() -> None:
    with pytest.raises(DataError, match="sample has no rte, only qnli, wnli") as err:
        load_glue("rte", "dev", sample=True)
    assert "nyu-mll/glue" in str(err.value) and "--data-dir" in str(err.value)


# --- the hub path (datasets.load_dataset replaced: no network here) -----------------------------


def _fake_hub(monkeypatch: pytest.MonkeyPatch, columns: dict) -> list:
    import datasets

    calls = []

    def load_dataset(path, name, split, revision):
        calls.append((path, name, split, revision))
        return datasets.Dataset.from_dict(columns)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_rows_and_provenance(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_hub(monkeypatch, {"premise": ["p0", "p1", "p2"], "hypothesis": ["h0", "h1", "h2"],
                                    "label": [2, 0, 1], "idx": [0, 1, 2]})  # fmt: skip
    rows, prov = load_glue("mnli", "dev_mismatched", limit=2)
    assert calls == [("nyu-mll/glue", "mnli", "validation_mismatched", "main")]
    assert rows == [{"idx": 0, "text_a": "p0", "text_b": "h0", "label": 2},
                    {"idx": 1, "text_a": "p1", "text_b": "h1", "label": 0}]  # fmt: skip
    assert prov["data_source"] == "hf:nyu-mll/glue/mnli:validation_mismatched"
    assert prov["data_revision"].startswith("main (fingerprint ")  # offline: no commit lookup


def test_hub_single_sentence_and_bad_label(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_hub(monkeypatch, {"sentence": ["ok .", "fine ."], "label": [1, 3], "idx": [0, 1]})
    assert load_glue("sst2", "train", limit=1)[0] == [
        {"idx": 0, "text_a": "ok .", "text_b": None, "label": 1}
    ]
    with pytest.raises(DataError, match="^nyu-mll/glue sst2 validation row 2: label 3 not in"):
        load_glue("sst2", "dev")


def test_hub_unavailable_says_how_to_provide(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(DataError) as err:
        load_glue("cola", "dev")
    message = str(err.value)
    assert message.startswith("GLUE cola not available from the hub (nyu-mll/glue cola validation")
    assert "--data-dir DIR" in message and "DIR/CoLA/dev.tsv" in message and "--sample" in message
