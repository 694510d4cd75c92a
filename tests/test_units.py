import pytest

from slurmexp.units import (
    MEM_UNIT_MIB,
    format_mem,
    format_time,
    parse_count,
    parse_mem,
    parse_time,
    parse_tres,
    read_mem,
    tres_gpus,
)


@pytest.mark.parametrize("text, minutes", [
    ("90", 90),
    ("0", 0),
    ("5:00", 5),
    ("5:01", 6),            # seconds round up
    ("0:30", 1),
    ("01:00:00", 60),
    ("36:00:00", 2160),     # hours unbounded without a day field
    ("01:00:01", 61),
    ("2-0", 2880),
    ("1-02", 1560),
    ("1-02:03", 1563),
    ("1-02:03:04", 1564),
    ("1-00:00:00", 1440),
])
def test_parse_time_formats(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["UNLIMITED", "unlimited", "INFINITE", "Infinite"])
def test_parse_time_unlimited_is_none(text):
    assert parse_time(text) is None


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("abc", "'abc'"),
    ("1:2:3:4", "too many"),
    ("1:90:00", "minutes must be below 60"),
    ("10:75", "seconds must be below 60"),
    ("1-24:00:00", "hours after a day count"),
    ("1-2:3:4:5", "too many"),
    ("-5", "not a whole number"),
    ("1.5", "'1.5'"),
    ("1h", "'1h'"),
])
def test_parse_time_rejects_bad_input(text, fragment):
    with pytest.raises(ValueError) as info:
        parse_time(text)
    assert fragment in str(info.value)
    assert repr(text) in str(info.value)


def test_parse_time_rejects_non_strings():
    with pytest.raises(ValueError):
        parse_time(True)
    with pytest.raises(ValueError):
        parse_time(1.5)


@pytest.mark.parametrize("minutes, text", [
    (0, "00:00:00"),
    (5, "00:05:00"),
    (60, "01:00:00"),
    (1439, "23:59:00"),
    (1440, "1-00:00:00"),
    (2 * 1440 + 61, "2-01:01:00"),
    (None, "UNLIMITED"),
])
def test_format_time(minutes, text):
    assert format_time(minutes) == text


@pytest.mark.parametrize("minutes", [0, 1, 59, 60, 61, 1439, 1440, 1441, 10_000])
def test_time_round_trip(minutes):
    assert parse_time(format_time(minutes)) == minutes


@pytest.mark.parametrize("text, mb", [
    ("8G", 8192),
    ("8g", 8192),
    ("8GB", 8192),
    ("8gib", 8192),
    ("500M", 500),
    ("500mb", 500),
    ("3900M", 3900),
    ("1T", 1024 * 1024),
    ("1024", 1024),          # a bare number is MiB, as in sbatch
    ("2048K", 2),
    ("1K", 1),               # rounds up, never shrinks a request
])
def test_parse_mem(text, mb):
    assert parse_mem(text) == mb


@pytest.mark.parametrize("text", ["", "G", "8X", "8 G G", "-1G", "1024B", "eight"])
def test_parse_mem_rejects_bad_input(text):
    with pytest.raises(ValueError) as info:
        parse_mem(text)
    assert repr(text) in str(info.value)


def test_parse_mem_decimal_suggests_whole_mib():
    with pytest.raises(ValueError) as info:
        parse_mem("1.5G")
    assert '"1536M"' in str(info.value)


@pytest.mark.parametrize("mb, text", [(8192, "8G"), (500, "500M"), (1536, "1536M"),
                                      (1024 * 1024, "1T"), (3 * 1024 * 1024 + 1024, "3073G")])
def test_format_mem(mb, text):
    assert format_mem(mb) == text
    assert parse_mem(text) == mb


# --- memory and TRES as Slurm prints them -------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("4000Mc", (4000.0, "c")), ("2Gn", (2048.0, "n")), ("512", (512.0, "")),
    ("1.5G", (1536.0, "")), ("2048K", (2.0, "")), ("16GiB", (16384.0, "")),
    (" 10.50M ", (10.5, "")), ("1P", (1024.0 ** 3, "")),
    ("", None), ("junk", None), (None, None), ("1.2.3G", None),
])
def test_read_mem(text, want):
    assert read_mem(text) == want


def test_read_mem_bare_bytes_and_the_one_unit_table():
    assert read_mem("1048576", bare="B") == (1.0, "")
    assert read_mem("1234K", bare="B") == (1234 / 1024, "")
    # The strict reader and the lenient one agree wherever both read a value.
    for text in ("8G", "500M", "1T", "2048K", "1024", "16GB"):
        assert parse_mem(text) == read_mem(text)[0], text
    assert MEM_UNIT_MIB["G"] == 1024


def test_parse_tres_is_the_one_reader():
    assert parse_tres("gres/gpu=2,cpu=8,mem=16G") == {"gres/gpu": 2, "cpu": 8, "mem": 16384}
    assert parse_tres("billing=2.5,cpu=1K,mem=15.62G,node=1") == {
        "cpu": 1024, "mem": 15995, "node": 1}          # decimals as sacct prints them, rounded up
    assert parse_tres(None) == parse_tres("") == parse_tres("(null)") == parse_tres("N/A") == {}
    assert parse_count("8") == 8 and parse_count("2K") == 2048 and parse_count("x") is None


def test_gpus_from_tres():
    assert tres_gpus(parse_tres("gres/gpu:a100=1,gres/gpu=1")) == 1      # the total wins
    assert tres_gpus(parse_tres("gres/gpu:a100=1,gres/gpu:v100=2")) == 3
    assert tres_gpus(parse_tres("cpu=4")) == 0


def test_the_parsers_and_the_report_use_these_rules():
    from slurmexp.backends.slurm import parse as sp
    from slurmexp.backends.slurm.parse import sacctmgr
    assert sacctmgr.parse_tres is parse_tres
    assert sp.parse_mem_mb("1.5G") == read_mem("1.5G")[0] and sp.parse_mem_mb("1024") == 1 / 1024
    pytest.importorskip("pandas")
    from slurmexp.report import frames
    assert frames._tres_numbers("gres/gpu:a100=1,cpu=2,mem=15.62G,node=1") == (1.0, 2.0, 1.0, 15995.0)
