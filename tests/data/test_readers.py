import io
import json
from pathlib import Path

import pytest

from bigseq.data.readers import Example, read_buffers, read_examples
from bigseq.errors import DataError


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def jsonl(*objs: object) -> str:
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs)


def assert_error(path: Path, line: int | None, reason: str, **kwargs: object) -> None:
    with pytest.raises(DataError) as info:
        read_examples(path, **kwargs)
    msg = str(info.value)
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    assert msg.startswith(where), msg
    assert reason in msg, msg


# --- JSONL ---------------------------------------------------------------------------------------


def test_jsonl_string_and_list_targets(tmp_path):
    path = write(
        tmp_path,
        "d.jsonl",
        jsonl(
            {"source": "hello", "target": "HH AH L OW"},
            {"source": " 机器学习 ", "target": ["machine learning", "ML "]},
        ),
    )
    assert read_examples(path) == [
        Example("hello", ("HH AH L OW",), 1),
        Example("机器学习", ("machine learning", "ML"), 2),
    ]


def test_jsonl_crlf_blank_lines_and_bom(tmp_path):
    content = "\ufeff" + '{"source": "a  b", "target": "x"}\r\n\r\n   \n{"source": "c", "target": "y"}'
    path = write(tmp_path, "d.jsonl", content)
    # Inner whitespace is kept; blank lines are skipped but still counted.
    assert read_examples(path) == [Example("a  b", ("x",), 1), Example("c", ("y",), 4)]


def test_jsonl_require_target_false(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl({"source": "a"}, {"source": "b", "target": "B"}))
    assert read_examples(path, require_target=False) == [Example("a", (), 1), Example("b", ("B",), 2)]
    assert_error(path, 1, "missing field 'target'")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"source": "a", "target": ', "malformed JSON"),
        ('["a", "b"]', "expected a JSON object"),
        ('{"target": "b"}', "missing field 'source'"),
        ('{"source": "a"}', "missing field 'target'"),
        ('{"source": 3, "target": "b"}', "field 'source' must be a string, got a number"),
        ('{"source": "a", "target": null}', "field 'target' must be a string or a list of strings"),
        ('{"source": "a", "target": []}', "field 'target' is an empty list"),
        ('{"source": "a", "target": ["b", 2]}', "field 'target'[1] must be a string"),
        ('{"source": "   ", "target": "b"}', "empty source"),
        ('{"source": "a\\ud800b", "target": "b"}', "field 'source' holds an unpaired surrogate \\ud800"),
        ('{"source": "a", "target": "\\udc00"}', "field 'target' holds an unpaired surrogate \\udc00"),
        ('{"source": "a", "target": ["b", "\\ud83d"]}', "field 'target'[1] holds an unpaired surrogate"),
        ('{"source": "a", "target": "b", "target": "c"}', "the field 'target' is given twice"),
        (
            '{"source": "a", "source": "a", "target": "b", "meta": {"id": 1}}',
            "the field 'source' is given twice",
        ),
        ('{"source": "a", "target": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply"),
    ],
)
def test_jsonl_errors_name_file_line_and_reason(tmp_path, line, reason):
    path = write(tmp_path, "bad.jsonl", jsonl({"source": "ok", "target": "ok"}) + "\n" + line + "\n")
    assert_error(path, 3, reason)


def test_invalid_utf8_reported_at_its_line(tmp_path):
    content = jsonl({"source": "a", "target": "b"}, {"source": "c", "target": "d"}).encode()
    content += b'{"source": "\xff\xfe", "target": "x"}\n'
    path = write(tmp_path, "d.jsonl", content)
    assert_error(path, 3, "invalid UTF-8")
    tsv = write(tmp_path, "d.tsv", b"a\tb\nc\td\ne\xc3\tf\n")
    assert_error(tsv, 3, "invalid UTF-8")


def test_utf16_files_are_named_not_read_as_text(tmp_path):
    """UTF-16 without a BOM read as UTF-8 gave sources wrapped in NULs (big-endian) or an error on a line
    past the file's end (little-endian); with a BOM, "invalid UTF-8 byte 0xff". All now say what it is."""
    text = "a\tb\nc\td\n"
    for name, data, line in (("be.tsv", text.encode("utf-16-be"), 1), ("le.tsv", text.encode("utf-16-le"), 1),
                             ("bom.tsv", text.encode("utf-16"), 1),
                             ("d.jsonl", jsonl({"source": "a", "target": "b"}).encode("utf-16-le"), 1)):  # fmt: skip
        assert_error(write(tmp_path, name, data), line, "not UTF-8 text (UTF-16, or a binary file?)")


# --- TSV -----------------------------------------------------------------------------------------


def test_tsv_groups_repeated_sources(tmp_path):
    content = "read\tR EH D\nlive\tL IH V\nread\tR IY D\n\nread\tR EH D\nlive\tL AY V\r\nsolo\t S OW L OW \n"
    path = write(tmp_path, "d.tsv", content)
    assert read_examples(path) == [
        Example("read", ("R EH D", "R IY D"), 1),
        Example("live", ("L IH V", "L AY V"), 2),
        Example("solo", ("S OW L OW",), 7),
    ]


def test_tsv_require_target_false(tmp_path):
    path = write(tmp_path, "d.tsv", "a\nb\tB\n")
    assert read_examples(path, require_target=False) == [Example("a", (), 1), Example("b", ("B",), 2)]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("no tab here", "found 1"),
        ("a\tb\tc", "found 3"),
        ("  \tb", "empty source"),
    ],
)
def test_tsv_errors_name_file_line_and_reason(tmp_path, line, reason):
    path = write(tmp_path, "bad.tsv", f"x\ty\n\n{line}\n")
    assert_error(path, 3, reason)
    if "found 3" in reason:
        assert_error(path, 3, reason, require_target=False)


# --- whole-file errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.tsv"])
def test_empty_file(tmp_path, name):
    path = write(tmp_path, name, "\n  \n\n")
    assert_error(path, None, "no examples found (empty file)")


def test_missing_file(tmp_path):
    assert_error(tmp_path / "nope.jsonl", None, "file not found")


def test_unsupported_suffix_names_supported_ones(tmp_path):
    path = write(tmp_path, "d.csv", "a,b\n")
    with pytest.raises(DataError, match=r"d\.csv.*\.jsonl.*\.tsv"):
        read_examples(path)


def test_read_buffers_strips_only_the_newline_and_yields_full_buffers():
    def buffers(size):
        return list(read_buffers(io.StringIO("  a b  \n\n机器\r\nlast"), size))

    assert buffers(0) == [["  a b  ", "", "机器", "last"]]
    assert buffers(3) == [["  a b  ", "", "机器"], ["last"]]
    assert buffers(1) == [["  a b  "], [""], ["机器"], ["last"]]
    assert list(read_buffers(io.StringIO(""), 2)) == []
    # a full buffer is handed over before the next line is read (what lets `generate` answer as it reads)
    read = []

    def stream():
        for line in ["a\n", "b\n", "c\n"]:
            read.append(line)
            yield line

    it = read_buffers(stream(), 2)
    assert next(it) == ["a", "b"] and read == ["a\n", "b\n"]


def test_read_buffers_decodes_bytes_and_names_the_bad_line():
    stream = io.BytesIO("\ufeffab\r\n机器\n".encode() + b"ok\n\xff\xfebad\n")
    it = read_buffers(stream, 3)
    assert next(it) == ["ab", "机器", "ok"]  # the byte-order mark of the first line is not text
    with pytest.raises(DataError, match=r"^stdin:4: invalid UTF-8 \(byte 0xff at byte 1\)$"):
        next(it)


# --- data.on_bad_line=skip -----------------------------------------------------------------------


def _dirty_jsonl(tmp_path: Path) -> Path:
    good = jsonl({"source": "a", "target": "A"}, {"source": "b", "target": ["B", "BB"]})
    bad_json, bad_utf8 = b'{"source": "c", "target": \n', b'{"source": "\xff", "target": "x"}\n'
    content = (
        good.encode() + bad_json + good.encode() + bad_utf8 + jsonl({"source": "d", "target": "D"}).encode()
    )
    return write(tmp_path, "dirty.jsonl", content)


def test_bad_lines_refused_by_default_at_the_first(tmp_path):
    assert_error(_dirty_jsonl(tmp_path), 3, "malformed JSON")


def test_skip_leaves_bad_lines_out_and_says_where_and_why(tmp_path):
    path = _dirty_jsonl(tmp_path)
    skipped: list[str] = []
    examples = read_examples(path, skipped=skipped)
    assert [(e.source, e.line) for e in examples] == [("a", 1), ("b", 2), ("a", 4), ("b", 5), ("d", 7)]
    assert len(skipped) == 2
    assert skipped[0].startswith(f"{path}:3: malformed JSON")
    assert skipped[1].startswith(f"{path}:6: invalid UTF-8")


def test_skip_in_tsv_and_empty_fields(tmp_path):
    path = write(tmp_path, "d.tsv", "a\tA\nno tab\n  \tB\nc\t  \na\tA2\n")
    assert_error(path, 2, "found 1")
    skipped: list[str] = []
    assert read_examples(path, skipped=skipped) == [Example("a", ("A", "A2"), 1)]
    assert [m.split(": ", 1)[1] for m in skipped] == [
        "expected 2 tab-separated fields (source<TAB>target), found 1",
        "empty source",
        "empty target",
    ]
    assert [m.split(": ", 1)[0] for m in skipped] == [f"{path}:2", f"{path}:3", f"{path}:4"]


def test_empty_target_is_a_bad_line(tmp_path):
    path = write(
        tmp_path, "d.jsonl", jsonl({"source": "a", "target": "A"}, {"source": "b", "target": ["B", " "]})
    )
    assert_error(path, 2, "empty target")


def test_all_lines_bad_is_still_an_error(tmp_path):
    path = write(tmp_path, "d.jsonl", "{\n[1]\n")
    skipped = ["earlier.jsonl:1: from another file"]
    with pytest.raises(
        DataError, match=r"no valid examples; all 2 non-blank lines are malformed .*d\.jsonl:1:"
    ):
        read_examples(path, skipped=skipped)
    assert_error(write(tmp_path, "e.jsonl", "\n"), None, "no examples found", skipped=[])


def test_keys_repeated_inside_an_unread_field_are_left_alone(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"source": "a", "target": "b", "meta": {"id": 1, "id": 2}}\n')
    assert read_examples(path) == [Example("a", ("b",), 1)]


def test_a_read_field_given_twice_is_found_after_another_repeated_key(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"id": 1, "id": 2, "source": "a", "target": "b", "target": "c"}\n')
    assert_error(path, 1, "the field 'target' is given twice")
