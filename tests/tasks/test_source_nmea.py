"""The NMEA source adapter: the real DMA log, hand-made sentences, and noisy random logs."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import datetime, timezone
from functools import reduce
from operator import xor
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyais import encode_dict

from tasks.errors import InputError
from tasks.sources.nmea import NmeaResult, read_nmea
from tasks.sources.raw import RAW_COLUMNS, SourceResult
from tasks.ingest import type_rows
from tasks.stage import apply_track_rules, rows_with_reasons

SHARED_AIS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ais"
DMA_LOG = SHARED_AIS / "nmea_dma_aislib_2010-06-11_stream_example.txt"
STAGING_PARAMS = {"max_implied_speed_kn": 60.0}
POSITION_TYPES = {1, 2, 3, 18, 19, 27}
T0 = datetime(2010, 6, 11, 11, 46, 12)


# --- building sentences -----------------------------------------------------------------------------

def _cs(text: str) -> str:
    return f"{reduce(xor, text.encode(), 0):02X}"


def pghp(t: datetime = T0, ms: int = 386) -> str:
    body = f"PGHP,1,{t.year},{t.month},{t.day},{t.hour},{t.minute},{t.second},{ms},219,,2190073,1,5D"
    return f"${body}*{_cs(body)}"


def tagged(sentence: str, c: int) -> str:
    block = f"s:r003669945,c:{c}"
    return f"\\{block}*{_cs(block)}\\{sentence}"


def position(mmsi: int, msg_type: int = 1, **fields) -> str:
    data = {"type": msg_type, "mmsi": mmsi, "lat": 55.5, "lon": 12.25, "speed": 10.4, "course": 123.4,
            "heading": 122, **fields}
    if msg_type in (1, 2, 3):
        data.setdefault("status", 0)
    [sentence] = encode_dict(data, talker_id="AI", sentence_type="VDM", radio_channel="A")
    return sentence


def static5(mmsi: int, seq_id: int = 3, **fields) -> list[str]:
    data = {"type": 5, "mmsi": mmsi, "imo": 9246906, "callsign": "PBDX", "shipname": "FRISIAN LADY",
            "ship_type": 71, "to_bow": 90, "to_stern": 15, "to_port": 7, "to_starboard": 7, "draught": 5.5,
            "destination": "ANTWERPEN", **fields}
    return encode_dict(data, talker_id="AI", sentence_type="VDM", radio_channel="B", seq_id=seq_id)


def with_checksum(body: str) -> str:
    return f"!{body}*{_cs(body)}"


def read(tmp_path: Path, lines: list[str | bytes], name: str = "log.nmea", con=None,
         table: str = "raw_ais") -> tuple[NmeaResult, list[dict]]:
    data = b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n"
    path = tmp_path / name
    path.write_bytes(data)
    con = con or duckdb.connect()
    result = read_nmea(path, con, table)
    cursor = con.execute(f'select * from "{table}" order by source_row')
    names = [d[0] for d in cursor.description]
    return result, [dict(zip(names, row)) for row in cursor.fetchall()]


def reasons(result: NmeaResult) -> dict[int, str]:
    """line number -> quarantine reason"""
    return {json.loads(q["payload"])["line_number"]: q["reason"] for q in result.quarantine}


def assert_nothing_lost(result: NmeaResult) -> None:
    assert result.rows_in == result.header_lines + result.message_lines + len(result.quarantine)


# --- the real DMA log -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dma():
    if not DMA_LOG.is_file():
        pytest.skip(f"the DMA NMEA sample {DMA_LOG} is absent (see /work/shared/data/ais/SOURCES.md section 2)")
    con = duckdb.connect()
    return read_nmea(DMA_LOG, con), con


def test_dma_log_decodes_as_sources_md_describes(dma):
    result, con = dma
    assert isinstance(result, SourceResult)
    assert result.rows_in == 8551
    assert result.header_lines == 4051
    assert result.quarantine == []  # all checksums valid, nothing orphaned, every position timed
    assert sum(result.message_types.values()) == 4051
    assert result.multipart_messages == 449
    assert result.message_types == {
        1: 2511, 2: 7, 3: 369, 4: 129, 5: 424, 6: 37, 7: 9, 8: 63, 9: 1, 15: 66, 16: 23, 17: 5, 18: 101,
        20: 191, 21: 37, 23: 4, 24: 74,
    }
    assert result.loaded == sum(n for t, n in result.message_types.items() if t in POSITION_TYPES) == 2988
    assert result.skipped_types == {t: n for t, n in result.message_types.items() if t not in POSITION_TYPES}
    assert_nothing_lost(result)

    days, classes, named, typed, imos = con.execute(
        """select list(distinct left("BaseDateTime", 10)),
                  list(distinct "TransceiverClass" order by "TransceiverClass"), count("VesselName"), count("VesselType"), count("IMO") from raw_ais"""
    ).fetchone()
    # the base station whose clock says 1997 sends type 4 reports, which add no rows
    assert days == ["2010-06-11"]
    assert classes == ["A", "B"]
    assert named > 100 and typed > 100 and imos > 50


def test_dma_log_goes_through_staging(dma):
    _, con = dma
    type_rows(con)
    apply_track_rules(con, STAGING_PARAMS["max_implied_speed_kn"])
    counts = dict(rows_with_reasons(con).aggregate("reject_reason, count(*)").fetchall())
    assert counts[None] > 2500
    # LAT 91 / LON 181 are kept as sent, so staging is what rejects them
    assert counts.get("position_not_available", 0) > 0


# --- hand-made lines --------------------------------------------------------------------------------

def test_class_a_position_after_header(tmp_path):
    result, [row] = read(tmp_path, [pghp(), position(244017000, turn=8.75)])
    assert (result.rows_in, result.loaded, result.header_lines, result.quarantine) == (2, 1, 1, [])
    assert set(row) == {"source_row", "source_file", *RAW_COLUMNS}
    assert row["source_file"] == str(tmp_path / "log.nmea")
    assert {k: row[k] for k in ("MMSI", "BaseDateTime", "LAT", "LON", "SOG", "COG", "Heading", "Status",
                                "ROT", "TransceiverClass")} == {
        "MMSI": "244017000", "BaseDateTime": "2010-06-11T11:46:12", "LAT": "55.5", "LON": "12.25",
        "SOG": "10.4", "COG": "123.4", "Heading": "122", "Status": "0",
        "ROT": "8.7",  # ROT_AIS 14 = 4.733 * sqrt(8.75 deg/min), read from the bits, one decimal
        "TransceiverClass": "A",
    }
    assert row["VesselName"] is None and row["IMO"] is None


def test_windows_line_ends_and_byte_order_mark(tmp_path):
    path = tmp_path / "windows.nmea"
    path.write_bytes(b"\xef\xbb\xbf" + f"{pghp()}\r\n{position(244017000)}\r\n".encode())
    result = read_nmea(path, duckdb.connect())
    assert (result.rows_in, result.header_lines, result.loaded, result.quarantine) == (2, 1, 1, [])


def test_not_available_codes_are_kept_as_sent(tmp_path):
    line = position(244017000, lat=91, lon=181, speed=102.3, course=360, heading=511, turn=-128, status=15)
    _, [row] = read(tmp_path, [pghp(), line])
    assert (row["LAT"], row["LON"], row["SOG"], row["COG"], row["Heading"], row["ROT"], row["Status"]) == (
        "91", "181", "102.3", "360", "511", "-128", "15")


def test_any_talker_id_and_vdo(tmp_path):
    base = position(244017000)
    body = base[1:base.index("*")]
    lines = []
    for talker, kind in [("AB", "VDM"), ("BS", "VDO"), ("--", "VDM"), ("SS", "VDO"), ("BY", "VDM")]:
        lines += [pghp(), with_checksum(talker + kind + body[5:])]
    result, rows = read(tmp_path, lines)
    assert result.quarantine == [] and result.loaded == 5 == len(rows)


def test_tag_block_time_in_seconds_and_milliseconds(tmp_path):
    c = int(datetime(2024, 1, 15, 6, 30, 5, tzinfo=timezone.utc).timestamp())
    lines = [
        tagged(position(211000001), c),
        tagged(position(211000002), c * 1000 + 999),
        pghp(),
        tagged(position(211000003), c),  # the sentence's own time wins over the header before it
        position(211000004),             # no tag block: the header's time
    ]
    result, rows = read(tmp_path, lines)
    assert result.quarantine == []
    assert [r["BaseDateTime"] for r in rows] == ["2024-01-15T06:30:05"] * 3 + ["2010-06-11T11:46:12"]


def test_unix_time_after_the_checksum(tmp_path):
    # two lines of the DMA log carry their receive time after the checksum
    line = "!AIVDM,1,1,,B,15@:Ip002k3Dr;`78KwapWp@0H5b,0*0F,1276256770"
    result, [row] = read(tmp_path, [line])
    assert result.quarantine == [] and row["BaseDateTime"] == "2010-06-11T11:46:10"


def test_two_part_static_report_joins_onto_every_position_of_that_mmsi(tmp_path):
    part1, part2 = static5(244017000, shipname="FRISIAN LADY", callsign="PBDX")
    lines = [
        pghp(), position(244017000),       # sent before the static report: still gets it (latest in file)
        pghp(), part1, part2,
        pghp(), position(244017000),
        pghp(), position(211000009),       # another vessel: no static data
    ]
    result, rows = read(tmp_path, lines)
    assert result.quarantine == [] and result.multipart_messages == 1
    assert result.skipped_types == {5: 1} and result.loaded == 3
    assert_nothing_lost(result)
    first, second, other = rows
    expected = {"VesselName": "FRISIAN LADY", "CallSign": "PBDX", "IMO": "IMO9246906", "VesselType": "71",
                "Length": "105", "Width": "14", "Draft": "5.5", "Destination": "ANTWERPEN"}
    assert {k: first[k] for k in expected} == expected == {k: second[k] for k in expected}
    assert all(other[k] is None for k in expected)


def test_latest_static_report_in_file_wins_and_imo_zero_is_null(tmp_path):
    lines = [pghp(), position(244017000), *static5(244017000, seq_id=1, shipname="OLD NAME"),
             *static5(244017000, seq_id=2, shipname="NEW NAME", imo=0)]
    _, [row] = read(tmp_path, lines)
    assert row["VesselName"] == "NEW NAME"
    # 0 = not available: it does not overwrite the IMO number the earlier report carried
    assert row["IMO"] == "IMO9246906"
    _, [row] = read(tmp_path, [pghp(), position(244017001), *static5(244017001, imo=0)], name="imo0.nmea")
    assert row["IMO"] is None


def test_class_b_reports_take_static_data_from_type_24_and_19(tmp_path):
    a = encode_dict({"type": 24, "mmsi": 211000010, "partno": 0, "shipname": "SEA SPIRIT"}, sentence_type="VDM")
    b = encode_dict({"type": 24, "mmsi": 211000010, "partno": 1, "ship_type": 37, "callsign": "OZ1234",
                     "to_bow": 8, "to_stern": 4, "to_port": 2, "to_starboard": 2}, sentence_type="VDM")
    t19 = encode_dict({"type": 19, "mmsi": 211000011, "lat": 56.0, "lon": 11.0, "speed": 5.0, "course": 10.0,
                       "heading": 511, "shipname": "BLUE HERON", "ship_type": 36, "to_bow": 6, "to_stern": 3,
                       "to_port": 1, "to_starboard": 2}, sentence_type="VDM")
    lines = [pghp(), position(211000010, msg_type=18), *a, *b, pghp(), *t19]
    result, (b18, b19) = read(tmp_path, lines)
    assert result.quarantine == [] and result.skipped_types == {24: 2}
    assert (b18["TransceiverClass"], b18["Status"], b18["ROT"]) == ("B", None, None)
    assert (b18["VesselName"], b18["VesselType"], b18["CallSign"], b18["Length"], b18["Width"]) == (
        "SEA SPIRIT", "37", "OZ1234", "12", "4")
    assert (b19["MMSI"], b19["VesselName"], b19["VesselType"], b19["Length"], b19["Width"], b19["Heading"]) == (
        "211000011", "BLUE HERON", "36", "9", "3", "511")


def test_long_range_type_27(tmp_path):
    line = encode_dict({"type": 27, "mmsi": 211000012, "lat": 60.5, "lon": -20.25, "speed": 63, "course": 90,
                        "status": 0}, sentence_type="VDM")[0]
    _, [row] = read(tmp_path, [pghp(), line])
    # 63 knots is type 27's own "not available": NULL, staging does not know that code
    assert (row["LAT"], row["LON"], row["SOG"], row["COG"], row["Heading"], row["TransceiverClass"]) == (
        "60.5", "-20.25", None, "90", None, "A")


def test_unusable_lines_are_quarantined_with_their_text_and_line_number(tmp_path):
    good = position(244017000)
    part1, part2 = static5(244017001, seq_id=7)
    late1, late2 = static5(244017002, seq_id=8)
    lines = [
        pghp(),                                      # 1
        good[:-2] + ("00" if good[-2:] != "00" else "01"),  # 2 bad checksum
        part1,                                       # 3 part 1 of 2 whose part 2 never comes
        position(244017003),                         # 4 fine
        late2,                                       # 5 part 2 without part 1 ...
        late1,                                       # 6 ... and its part 1 after it
        "hello, this is not NMEA",                   # 7
        "$GPGGA,114612.00,5530.0000,N,01215.0000,E,1,08,0.9,10.0,M,40.0,M,,*" + _cs(
            "GPGGA,114612.00,5530.0000,N,01215.0000,E,1,08,0.9,10.0,M,40.0,M,,"),  # 8 a GPS fix
        with_checksum("AIVDM,1,1,,A,13u?8T00001Uk8BUPMcbnied0@OF,0,extra"),        # 9 8 fields
        b"!AIVDM,1,1,,A,13u?8T0\xff\xfe1Uk8BUPMcbnied0@OF,0*4A",                 # 10 non-UTF-8 bytes
        "",                                          # blank: not counted
        "   ",                                       # blank: not counted
        "$PGHP,1,2010,13,11,11,46,12,0,219,,1,1,00*" + _cs("PGHP,1,2010,13,11,11,46,12,0,219,,1,1,00"),  # 13
        position(244017004),                         # 14 the header before it was broken
    ]
    result, rows = read(tmp_path, lines)
    assert [r["MMSI"] for r in rows] == ["244017003"]
    assert reasons(result) == {
        2: "bad_checksum", 3: "orphan_fragment", 5: "orphan_fragment", 6: "orphan_fragment",
        7: "not_ais_sentence", 8: "not_ais_sentence", 9: "undecodable", 10: "bad_checksum",
        13: "bad_timestamp_header", 14: "no_timestamp",
    }
    assert result.rows_in == 12 and result.header_lines == 1
    assert_nothing_lost(result)
    by_line = {json.loads(q["payload"])["line_number"]: q for q in result.quarantine}
    payload = json.loads(by_line[7]["payload"])
    assert payload["line"] == "hello, this is not NMEA" and payload["rejection_detail"]
    assert by_line[7]["stage"] == "ingest" and by_line[7]["record_id"].endswith("line:7")
    assert by_line[14]["mmsi"] == "244017004"


def test_payloads_too_short_for_their_fields_are_undecodable(tmp_path):
    full = position(244017000)
    payload = full.split(",")[5]
    lines = [
        pghp(),
        with_checksum("AIVDM,1,1,,A,1,0"),                   # 6 bits: not even an MMSI
        with_checksum(f"AIVDM,1,1,,A,{payload[:17]},0"),     # 102 bits: MMSI but no latitude
        with_checksum("AIVDM,1,1,,A,,0"),                    # no payload at all
        with_checksum(f"AIVDM,1,1,,A,{payload},7"),          # 7 fill bits
    ]
    result, rows = read(tmp_path, lines)
    assert rows == [] and reasons(result) == {2: "undecodable", 3: "undecodable", 4: "undecodable", 5: "undecodable"}
    assert_nothing_lost(result)


def test_position_without_any_time_is_quarantined_but_static_data_is_not(tmp_path):
    result, rows = read(tmp_path, [position(244017000), *static5(244017000)])
    assert rows == [] and result.loaded == 0
    assert list(reasons(result).values()) == ["no_timestamp"]
    assert result.skipped_types == {5: 1}


def test_other_message_types_are_counted_not_quarantined(tmp_path):
    base_station = encode_dict({"type": 4, "mmsi": 2190064, "year": 1997, "month": 1, "day": 1}, sentence_type="VDM")
    result, rows = read(tmp_path, [pghp(), *base_station, position(244017000)])
    assert result.quarantine == [] and result.skipped_types == {4: 1} and len(rows) == 1


def test_appends_to_an_existing_raw_table(tmp_path):
    con = duckdb.connect()
    read(tmp_path, [pghp(), position(211000001)], name="a.nmea", con=con)
    _, rows = read(tmp_path, [pghp(), position(211000002)], name="b.nmea", con=con)
    assert [(r["source_row"], r["MMSI"], Path(r["source_file"]).name) for r in rows] == [
        (1, "211000001", "a.nmea"), (2, "211000002", "b.nmea")]


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"\n  \n", "is empty"),
    (b"MMSI,BaseDateTime,LAT,LON\n366000001,2024-01-15T00:00:00,33.7,-118.2\n", "no AIS NMEA sentences"),
])
def test_unusable_files_raise_input_error(tmp_path, content, message):
    path = tmp_path / "x.nmea"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_nmea(path, duckdb.connect())


# --- noisy random logs ------------------------------------------------------------------------------

EXAMPLE_NUMBERS = itertools.count()
ARMOUR = [chr(c) for c in range(48, 88)] + [chr(c) for c in range(96, 120)]  # AIS six-bit payload characters
mmsis = st.integers(201_000_000, 775_999_999)


@st.composite
def valid_item(draw) -> tuple[list[str], int | None]:
    """(lines, MMSI of the position report they carry, or None)"""
    mmsi = draw(mmsis)
    kind = draw(st.sampled_from(["class_a", "class_b", "base_station", "static5"]))
    if kind == "class_a":
        sentences = [position(mmsi, msg_type=draw(st.sampled_from([1, 2, 3])),
                              lat=draw(st.floats(-90, 90)), lon=draw(st.floats(-180, 180)))]
    elif kind == "class_b":
        sentences = [position(mmsi, msg_type=18)]
    elif kind == "base_station":
        sentences = encode_dict({"type": 4, "mmsi": mmsi}, sentence_type="VDM")
    else:
        sentences = static5(mmsi, seq_id=draw(st.integers(0, 9)))
    if draw(st.booleans()):
        lines = [pghp(), *sentences]
    else:
        lines = [tagged(sentences[0], 1276256770), *sentences[1:]]
    return lines, mmsi if kind in ("class_a", "class_b") else None


@st.composite
def damaged_line(draw) -> bytes:
    line = position(draw(mmsis)).encode()
    how = draw(st.sampled_from(["truncate", "flip", "random", "fields", "short", "noise_payload"]))
    if how == "truncate":
        return line[:draw(st.integers(0, len(line) - 1))]
    if how == "flip":
        i = draw(st.integers(0, len(line) - 1))
        new = draw(st.integers(0, 255).filter(lambda b: b not in (line[i], 10, 13)))
        return line[:i] + bytes([new]) + line[i + 1:]
    if how == "random":
        return draw(st.binary(max_size=90)).replace(b"\n", b"").replace(b"\r", b"")
    body = line.decode()[1:line.index(b"*")]
    fields = body.split(",")
    # the last two keep a valid checksum, so pyais has to cope with what they carry
    if how == "short":
        payload = fields[5][:draw(st.integers(0, len(fields[5]) - 1))]
        return with_checksum(",".join([*fields[:5], payload, str(draw(st.integers(0, 5)))])).encode()
    if how == "noise_payload":
        payload = draw(st.text(alphabet=ARMOUR, max_size=80))
        return with_checksum(",".join([*fields[:5], payload, str(draw(st.integers(0, 5)))])).encode()
    fields = fields[:-1] if draw(st.booleans()) else fields + ["X"]
    return with_checksum(",".join(fields)).encode()


@pytest.fixture(scope="module")
def shared_con():
    return duckdb.connect()  # one connection for all examples: connecting costs more than reading


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_noisy_logs_lose_nothing_and_keep_every_valid_position(tmp_path_factory, shared_con, data):
    items = data.draw(st.lists(valid_item(), min_size=1, max_size=8))
    damaged = data.draw(st.lists(damaged_line(), max_size=8))
    blocks = data.draw(st.permutations([lines for lines, _ in items] + [[d] for d in damaged]))
    lines = [line for block in blocks for line in block]
    table = f"raw_{next(EXAMPLE_NUMBERS)}"
    result, rows = read(tmp_path_factory.mktemp("noisy"), lines, con=shared_con, table=table)
    shared_con.execute(f'drop table "{table}"')

    nonempty = sum(1 for raw in (b"\n".join(l if isinstance(l, bytes) else l.encode() for l in lines)).splitlines()
                   if raw.strip())
    assert result.rows_in == nonempty
    assert_nothing_lost(result)
    multipart_lines = result.message_lines - sum(result.message_types.values())
    assert result.loaded + len(result.quarantine) + result.header_lines + sum(result.skipped_types.values()) \
        + multipart_lines == nonempty
    assert result.loaded == len(rows)
    expected = Counter(mmsi for _, mmsi in items if mmsi is not None)
    assert not expected - Counter(int(r["MMSI"]) for r in rows)
