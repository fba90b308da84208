"""Input tables are read strictly: the labels CSV (pipeline/inputs.py) and the training id list (trainer/subset.py)
accept a BOM and CRLF, and refuse duplicate ids, missing columns, unknown splits and undecodable text in one line
naming the file, the line and the value; the CLI reports such a mistake as a usage error (exit code 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.inputs import discover, read_labels
from trainer.subset import read_id_list
from v2a.io import InputError

REPO = Path(__file__).resolve().parent.parent
ROWS = [("--0PQM4-hqg", "30", "dog barking", "train"), ("-0BIyqJj9ZU", "20", "male speech, man speaking", "test"),
        ("zzz_1", "0", "cat meowing", "val")]


def csv_text(rows, header: bool = False, eol: str = "\n") -> str:
    lines = ["youtube_id,start_seconds,label,split"] if header else []
    lines += [",".join([y, s, f'"{lab}"' if "," in lab else lab, sp]) for y, s, lab, sp in rows]
    return eol.join(lines) + eol


EXPECTED = {"--0PQM4-hqg_000030": ("dog barking", "train"), "-0BIyqJj9ZU_000020": ("male speech, man speaking", "test"),
            "zzz_1_000000": ("cat meowing", "val")}


@pytest.mark.parametrize("bom", [False, True], ids=["utf8", "bom"])
@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("header", [False, True], ids=["rows", "header"])
def test_bom_crlf_and_header_read_the_same_table(tmp_path, bom, eol, header):
    p = tmp_path / "labels.csv"
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + csv_text(ROWS, header, eol).encode("utf-8"))
    assert read_labels(p) == EXPECTED


def test_three_columns_and_whole_float_starts(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("abc,7.0,rain\n\n  \nxyz,12,wind,\n")
    assert read_labels(p) == {"abc_000007": ("rain", ""), "xyz_000012": ("wind", "")}


@pytest.mark.parametrize("line2, message", [
    ("--0PQM4-hqg,30,cat meowing,test",
     "labels {p}:2: clip --0PQM4-hqg_000030 ('--0PQM4-hqg' at '30' s) is already on line 1; one row per clip"),
    ("--0PQM4-hqg,30.0,dog barking,train",
     "labels {p}:2: clip --0PQM4-hqg_000030 ('--0PQM4-hqg' at '30.0' s) is already on line 1; one row per clip"),
    ("abc,30", "labels {p}:2: expected the 4 columns youtube_id,start_seconds,label[,split], got 2: ['abc', '30']"),
    ("abc,30,dog,train,extra", "labels {p}:2: expected the 4 columns youtube_id,start_seconds,label[,split], got 5: "
                               "['abc', '30', 'dog', 'train', 'extra']"),
    ("abc,3x,dog,train", "labels {p}:2: start_seconds '3x' is not a whole number of seconds"),
    ("abc,30.5,dog,train", "labels {p}:2: start_seconds '30.5' is not a whole number of seconds"),
    ("abc,30,dog,tset", "labels {p}:2: split 'tset' is not one of train, val, test"),
    ("abc,30,,train", "labels {p}:2: label is empty in ['abc', '30', '', 'train']"),
    (",30,dog,train", "labels {p}:2: youtube_id is empty in ['', '30', 'dog', 'train']"),
])
def test_mistakes_name_the_file_line_and_value(tmp_path, line2, message):
    p = tmp_path / "labels.csv"
    p.write_text("--0PQM4-hqg,30,dog barking,train\r\n" + line2 + "\r\n")
    with pytest.raises(InputError) as err:
        read_labels(p)
    assert str(err.value) == message.format(p=p)


def test_latin1_is_refused_with_the_file_line_and_bytes(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_bytes("a,0,dog,train\nb,0,caf\u00e9 noise,test\n".encode("latin-1"))
    with pytest.raises(InputError) as err:
        read_labels(p)
    assert str(err.value) == f"labels {p}:2: not UTF-8 text (byte 0xe9 in b'b,0,caf\\xe9 noise,test'); save the " \
                             "file as UTF-8"


def test_discover_gives_the_first_clip_its_label_despite_a_bom(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for cid in EXPECTED:
        (videos / f"{cid}.mp4").write_bytes(b"not decoded here")
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\xef\xbb\xbf" + csv_text(ROWS, eol="\r\n").encode("utf-8"))
    got = {c.id: (c.label, c.split) for c in discover(videos, labels)}
    assert got == EXPECTED


# ------------------------------------------------------------------------------------------ the training id list


def test_id_list_bom_crlf_comments(tmp_path):
    p = tmp_path / "ids.txt"
    p.write_bytes(b"\xef\xbb\xbfa_000001\r\n# VisualSound\r\n\r\nb_000002  # kept\r\n")
    assert read_id_list(p) == ["a_000001", "b_000002"]


@pytest.mark.parametrize("body, message", [
    (b"a\nb\n\na\n", "paths.train_ids {p}:4: id 'a' is listed more than once (first on line 1)"),
    (b"a\nb c\n", "paths.train_ids {p}:2: clip id 'b c' is not safe to use in a path: use letters, digits, '_', "
                  "'-' and '.', no '/', no '..', at most 200 characters"),
    (b"a\n\xe9t\xe9\n", "paths.train_ids {p}:2: not UTF-8 text (byte 0xe9 in b'\\xe9t\\xe9'); save the file as UTF-8"),
    (b"# only a comment\n", "paths.train_ids: {p} lists no clip ids"),
])
def test_id_list_mistakes(tmp_path, body, message):
    p = tmp_path / "ids.txt"
    p.write_bytes(body)
    with pytest.raises(InputError) as err:
        read_id_list(p)
    assert str(err.value) == message.format(p=p)


# ------------------------------------------------------------------------------------------ the CLI


def test_a_labels_mistake_is_a_usage_error_exit_2(tmp_path, keep_logging):
    from lab.cli import app

    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a_000000.mp4").write_bytes(b"x")
    labels = tmp_path / "labels.csv"
    labels.write_text("a,0,dog,train\na,0,cat,test\n")
    res = CliRunner().invoke(app, ["-c", str(REPO / "stages.yaml"), "-c", str(REPO / "configs" / "demo.yaml"),
                                   "--set", f"paths.videos={videos}", "--set", f"paths.labels={labels}",
                                   "--set", f"paths.cache={tmp_path / 'cache'}", "--no-progress", "run", "frames"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.stderr.splitlines()[-1] == (f"error: labels {labels}:2: clip a_000000 ('a' at '0' s) is already on "
                                           "line 1; one row per clip")
