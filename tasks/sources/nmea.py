"""Raw NMEA 0183 AIS logs (`!xxVDM` / `!xxVDO` sentences, any talker id) into the raw contract.

One raw row per decoded position report (types 1, 2, 3, 18, 19, 27). Static and voyage data
(types 5, 19, 24) are joined onto the positions of the same MMSI. Every other valid message type
is counted in `NmeaResult.skipped_types`, not quarantined. Each non-empty line of the file ends up
as exactly one of: a timestamp header, a line of a decoded message, or a quarantine row.

Times: a line's own time (an NMEA 4.0 tag block `\\c:<unix s or ms>*hh\\!AIVDM...`, or a unix time some
receivers append after the checksum, `!AIVDM,...,0*0F,1276256770`) wins; otherwise the last good
GateHouse header `$PGHP,1,<yyyy>,<m>,<d>,<H>,<M>,<S>,<ms>,...` before the sentence gives it. A
multi-part message takes the first own time among its parts, else the header time at its first
part. Times are UTC, truncated to whole seconds.

Quarantine reasons (stage "ingest", one row per line, record_id `<file name>:line:<n>`):
- bad_checksum: an AIS sentence, `$PGHP` header or tag block whose `*hh` checksum is missing,
  malformed or wrong, or that holds non-ASCII bytes (NMEA is ASCII; such a line was damaged).
- not_ais_sentence: a line that is neither a `!xxVDM`/`!xxVDO` sentence nor a `$PGHP,1` header
  (GPS sentences, text, binary noise).
- orphan_fragment: a part of a multi-part message whose siblings never arrived or came out of order.
- undecodable: a sentence (or assembled message) with a valid checksum that pyais cannot decode,
  an undefined message type, or a position report too short to hold its position fields.
- bad_timestamp_header: a `$PGHP` header with a valid checksum whose date/time is not a real time;
  the sentences after it get no header time until the next good header.
- no_timestamp: a position report with neither a tag-block `c:` time nor a `$PGHP` header before it.
"""

from __future__ import annotations

import math
import re
from functools import reduce
from operator import xor
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from pyais.messages import AISSentence, NMEASentenceFactory

from tasks.artifacts import quarantine_row
from tasks.errors import InputError
from tasks.sources.raw import SourceResult, append_frame, create_raw_table

POSITION_TYPES = frozenset({1, 2, 3, 18, 19, 27})
CLASS_B_TYPES = frozenset({18, 19})
# bits a position report must carry up to its last field read here (heading; type 27: course)
MIN_POSITION_BITS = {1: 137, 2: 137, 3: 137, 18: 133, 19: 133, 27: 94}

# `!` + two-character talker id (AI, AB, BS, `--`, ...) + VDM (others' traffic) or VDO (own ship)
AIS_SENTENCE = re.compile(r"^!(?P<talker>[^,!*\\]{2})(?P<kind>VDM|VDO),")
CHECKSUM_TAIL = re.compile(r"\*([0-9A-Fa-f]{2})$")
# some receivers append their receive time after the checksum: `...,0*0F,1276256770` (unix seconds)
TIME_SUFFIX = re.compile(r"\*[0-9A-Fa-f]{2}(,\d+)$")
PAYLOAD_CHARS = re.compile(r"^[0-W`-w]*$")  # the 64 characters of AIS six-bit armouring
GATEHOUSE_HEADER = "$PGHP,1,"


@dataclass
class NmeaResult(SourceResult):
    """SourceResult plus what the log held besides positions. Invariant:
    rows_in == header_lines + message_lines + len(quarantine)."""

    header_lines: int = 0         # good `$PGHP,1` timestamp headers
    message_lines: int = 0        # lines of decoded messages that became a row or were skipped
    multipart_messages: int = 0   # decoded messages assembled from more than one sentence
    message_types: dict[int, int] = field(default_factory=dict)   # every decoded message, by type
    # decoded, valid AIS that adds no raw row of its own (4, 8, 20, ...; 5 and 24 feed the static join)
    skipped_types: dict[int, int] = field(default_factory=dict)

    @property
    def reasons(self) -> dict[str, int]:
        return dict(Counter(row["reason"] for row in self.quarantine))


@dataclass
class _Part:
    """One checksum-valid AIS sentence, with the time context it arrived in."""

    number: int                      # 1-based line number in the file
    text: str
    sentence: AISSentence
    header_time: datetime | None     # the last good `$PGHP` header's time, if any
    line_time: datetime | None       # the line's own time: tag block `c:` or unix time after the checksum
    time_problem: str | None         # why that own time could not be read


def read_nmea(path: Path, con: duckdb.DuckDBPyConnection, table: str = "raw_ais") -> NmeaResult:
    """Decode a raw NMEA AIS log and append one raw row per position report to `table`.

    Raises InputError when the file is missing, empty, or holds no AIS sentence at all."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"NMEA file {path} does not exist; check source.path in the pipeline config")
    lines = [(n, raw) for n, raw in enumerate(path.read_bytes().splitlines(), start=1) if raw.strip()]
    if not lines:
        raise InputError(f"NMEA file {path} is empty; re-download it or point source.path at another file")

    reader = _LogReader(path)
    for number, raw in lines:
        # per line, so one damaged byte costs one line; a UTF-8 byte order mark is not part of the text
        reader.line(number, raw.decode("utf-8", errors="replace").strip().lstrip("\ufeff"))
    reader.finish()
    if reader.recognised == 0:
        raise InputError(
            f"{path} holds no AIS NMEA sentences (!AIVDM/!AIVDO lines or $PGHP headers); "
            "pass a raw NMEA 0183 AIS log, or set source.kind to the file's real format"
        )

    exists = con.execute("select count(*) from duckdb_tables() where table_name = $t", {"t": table}).fetchone()[0]
    if not exists:
        create_raw_table(con, table)
    rows = reader.position_rows()
    if rows:
        append_frame(con, pd.DataFrame(rows), str(path), table)
    return NmeaResult(
        path=path,
        rows_in=len(lines),
        loaded=len(rows),
        quarantine=[row for _, row in sorted(reader.quarantine, key=lambda item: item[0])],
        header_lines=reader.header_lines,
        message_lines=reader.message_lines,
        multipart_messages=reader.multipart,
        message_types=dict(sorted(reader.message_types.items())),
        skipped_types=dict(sorted(reader.skipped_types.items())),
    )


class _LogReader:
    """Reads a log line by line: time context, fragment assembly, decoding, quarantine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header_time: datetime | None = None
        self.pending: dict[tuple[int, int | None, str], list[_Part]] = {}
        self.quarantine: list[tuple[int, dict[str, Any]]] = []
        self.positions: list[dict[str, str | None]] = []
        # "latest in file": for each MMSI, each static field keeps the last value any type 5, 19 or 24
        # report anywhere in the file carried, also for positions sent before that report
        self.static: dict[int, dict[str, str]] = {}
        self.header_lines = 0
        self.message_lines = 0
        self.multipart = 0
        self.recognised = 0  # lines that are AIS sentences or headers, good or bad
        self.message_types: Counter[int] = Counter()
        self.skipped_types: Counter[int] = Counter()

    # --- lines ------------------------------------------------------------------------------------

    def line(self, number: int, text: str) -> None:
        line_time = time_problem = None
        sentence = text
        if text.startswith("\\"):
            end = text.find("\\", 1)
            if end < 0:
                self.reject(number, text, "not_ais_sentence", "tag block has no closing backslash")
                return
            block, sentence = text[1:end], text[end + 1:]
            if not AIS_SENTENCE.match(sentence):
                self.reject(number, text, "not_ais_sentence", "no !xxVDM/!xxVDO sentence after the tag block")
                return
            self.recognised += 1
            fields, problem = _checked_body(block, 0)
            if problem:
                self.reject(number, text, "bad_checksum", f"tag block: {problem}")
                return
            line_time, time_problem = _tag_block_time(fields)
        elif text.startswith("$PGHP"):
            self.header(number, text)
            return
        elif not AIS_SENTENCE.match(text):
            self.reject(number, text, "not_ais_sentence", "neither an !xxVDM/!xxVDO sentence nor a $PGHP header")
            return
        else:
            self.recognised += 1
        self.sentence(number, text, sentence, line_time, time_problem)

    def header(self, number: int, text: str) -> None:
        body, problem = _checked_body(text, 1)
        if problem:
            self.recognised += 1
            self.reject(number, text, "bad_checksum", problem)
            return
        if not text.startswith(GATEHOUSE_HEADER):
            self.reject(number, text, "not_ais_sentence", "a $PGHP message other than the type 1 timestamp header")
            return
        self.recognised += 1
        # $PGHP,1,<yyyy>,<m>,<d>,<H>,<M>,<S>,<ms>,<country>,<region>,<pss>,<online>
        fields = body.split(",")
        try:
            year, month, day, hour, minute, second, millis = (int(v) for v in fields[2:9])
            if not 0 <= millis <= 999:
                raise ValueError(f"millisecond {millis}")
            # GateHouse times are UTC; BaseDateTime has whole seconds, so the milliseconds are dropped
            self.header_time = datetime(year, month, day, hour, minute, second)
        except ValueError as exc:
            self.header_time = None  # the sentences after a broken header must not inherit an older time
            self.reject(number, text, "bad_timestamp_header", f"no valid date/time in fields 2-8: {exc}")
            return
        self.header_lines += 1

    def sentence(self, number: int, text: str, sentence: str, line_time: datetime | None,
                 time_problem: str | None) -> None:
        suffix = TIME_SUFFIX.search(sentence)
        if suffix:
            sentence = sentence[:suffix.start(1)]
            if line_time is None and time_problem is None:
                line_time, time_problem = _unix_time(suffix.group(1)[1:], "time after the checksum")
        body, problem = _checked_body(sentence, 1)
        if problem:
            self.reject(number, text, "bad_checksum", problem)
            return
        fields = body.split(",")
        if len(fields) != 7:
            self.reject(number, text, "undecodable", f"{len(fields)} fields, an AIS sentence has 7")
            return
        if not PAYLOAD_CHARS.match(fields[5]):
            self.reject(number, text, "undecodable", "payload holds characters outside AIS six-bit armouring")
            return
        try:
            parsed = NMEASentenceFactory.produce(sentence.encode("ascii"))
        except Exception as exc:  # pyais raises several exception types for malformed fields
            self.reject(number, text, "undecodable", f"{type(exc).__name__}: {exc}")
            return
        assert isinstance(parsed, AISSentence)  # AIS_SENTENCE matched, so pyais made a VDM/VDO sentence
        part = _Part(number, text, parsed, self.header_time, line_time, time_problem)
        if parsed.frag_cnt == 1:
            self.message([part])
            return
        # multi-part messages are assembled by (fragment count, sequential id, channel)
        key = (parsed.frag_cnt, parsed.seq_id, parsed.channel)
        waiting = self.pending.get(key)
        if parsed.frag_num == 1:
            if waiting:
                self.orphan(self.pending.pop(key), "a new part 1 with the same id arrived before the rest")
            self.pending[key] = [part]
        elif waiting and waiting[-1].sentence.frag_num == parsed.frag_num - 1:
            waiting.append(part)
            if parsed.frag_num == parsed.frag_cnt:
                self.message(self.pending.pop(key))
        else:
            if waiting:
                last = waiting[-1].sentence.frag_num
                self.orphan(self.pending.pop(key), f"part {parsed.frag_num} arrived after part {last}")
            self.orphan([part], "the parts before it did not arrive just before it")

    def finish(self) -> None:
        for parts in self.pending.values():
            self.orphan(parts, "the file ended before the remaining parts arrived")
        self.pending.clear()

    # --- messages ---------------------------------------------------------------------------------

    def message(self, parts: list[_Part]) -> None:
        try:
            assembled = AISSentence.assemble_from_iterable([p.sentence for p in parts])
            decoded = assembled.decode()
        except Exception as exc:  # pyais raises several exception types for payloads it cannot read
            self.reject_parts(parts, "undecodable", f"{type(exc).__name__}: {exc}")
            return
        msg_type = assembled.ais_id
        if msg_type == 0:
            # pyais decodes type 0 as if it were type 1; ITU-R M.1371 defines no type 0
            self.reject_parts(parts, "undecodable", "message type 0 is not defined")
            return
        if decoded.mmsi is None:  # pyais leaves fields past the end of the payload as None
            self.reject_parts(parts, "undecodable", f"type {msg_type} payload too short to hold an MMSI")
            return
        mmsi = int(decoded.mmsi)
        if msg_type in POSITION_TYPES:
            bits = len(assembled.bv)
            if bits < MIN_POSITION_BITS[msg_type]:
                # pyais fills fields past the end of a short payload with partial bits, not NULL
                self.reject_parts(parts, "undecodable", f"type {msg_type} payload has {bits} bits, "
                                  f"its position fields need {MIN_POSITION_BITS[msg_type]}", mmsi)
                return
            first = parts[0]
            tagged = next((p for p in parts if p.line_time is not None), None)
            if tagged is None and first.time_problem:
                self.reject_parts(parts, "no_timestamp", first.time_problem, mmsi)
                return
            time = tagged.line_time if tagged else first.header_time
            if time is None:
                self.reject_parts(parts, "no_timestamp", "no tag-block c: time and no $PGHP header before it", mmsi)
                return
            self.positions.append(_position_fields(msg_type, decoded, assembled, mmsi, time))
        else:
            self.skipped_types[msg_type] += 1
        if msg_type in (5, 19, 24):
            merged = self.static.setdefault(mmsi, {})
            merged.update(_static_fields(msg_type, decoded))
        self.message_types[msg_type] += 1
        self.message_lines += len(parts)
        self.multipart += len(parts) > 1

    def position_rows(self) -> list[dict[str, str | None]]:
        rows = []
        for row in self.positions:
            static = self.static.get(int(row["MMSI"]), {})
            rows.append({**row, **static})
        return rows

    # --- quarantine -------------------------------------------------------------------------------

    def reject(self, number: int, text: str, reason: str, detail: str, mmsi: int | None = None) -> None:
        record = {"id": f"{self.path.name}:line:{number}", "mmsi": mmsi, "line_number": number, "line": text,
                  "source_file": str(self.path)}
        self.quarantine.append((number, quarantine_row("ingest", reason, detail, record)))

    def reject_parts(self, parts: list[_Part], reason: str, detail: str, mmsi: int | None = None) -> None:
        for p in parts:
            where = f"part {p.sentence.frag_num} of {p.sentence.frag_cnt}: " if len(parts) > 1 else ""
            self.reject(p.number, p.text, reason, where + detail, mmsi)

    def orphan(self, parts: list[_Part], why: str) -> None:
        for p in parts:
            s = p.sentence
            self.reject(p.number, p.text, "orphan_fragment",
                        f"part {s.frag_num} of {s.frag_cnt} (sequential id {s.seq_id}, channel {s.channel!r}): {why}")


# --- pure helpers ---------------------------------------------------------------------------------

def _checked_body(text: str, skip: int) -> tuple[str, str | None]:
    """The text between the first `skip` characters and `*hh`, and why its checksum fails (or None)."""
    if not text.isascii():
        return "", "non-ASCII bytes in the line (damaged in transit)"
    match = CHECKSUM_TAIL.search(text)
    if not match:
        return "", "no *hh checksum at the end"
    body = text[skip:match.start()]
    actual = reduce(xor, body.encode("ascii"), 0)
    if actual != int(match.group(1), 16):
        return "", f"checksum is {match.group(1)}, the text gives {actual:02X}"
    return body, None


def _tag_block_time(fields: str) -> tuple[datetime | None, str | None]:
    """The `c:` receive time of an NMEA 4.0 tag block (None, None when it has none)."""
    for item in fields.split(","):
        key, _, value = item.partition(":")
        if key == "c":
            return _unix_time(value, "tag block c:")
    return None, None


def _unix_time(value: str, what: str) -> tuple[datetime | None, str | None]:
    """Unix seconds or milliseconds as naive UTC, or why the text is not one."""
    if not value.isdigit():
        return None, f"{what} {value!r} is not a unix time"
    seconds = int(value)
    if seconds >= 10**11:  # 10**11 s is the year 5138: bigger values are milliseconds
        seconds //= 1000
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None), None
    except (OverflowError, OSError, ValueError):
        return None, f"{what} {value} is out of range"


def _number(value: float | int, places: int) -> str:
    text = f"{value:.{places}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _position_fields(
    msg_type: int, msg: Any, sentence: AISSentence, mmsi: int, time: datetime
) -> dict[str, str | None]:
    # LAT 91 / LON 181, SOG 102.3, COG 360 and Heading 511 are AIS "not available" codes, kept as sent
    row: dict[str, str | None] = {
        "MMSI": str(mmsi),
        "BaseDateTime": time.isoformat(timespec="seconds"),  # naive UTC: YYYY-MM-DDTHH:MM:SS
        "LAT": _number(msg.lat, 6),
        "LON": _number(msg.lon, 6),
        "TransceiverClass": "B" if msg_type in CLASS_B_TYPES else "A",
        "Status": None,
        "ROT": None,
        "Heading": None,
    }
    if msg_type == 27:
        # long-range reports: whole knots (63 = not available) and whole degrees (511 = not available),
        # codes staging does not know, so they become NULL here
        row["SOG"] = None if msg.speed >= 63 else _number(msg.speed, 0)
        row["COG"] = None if msg.course >= 511 else _number(msg.course, 0)
        row["Status"] = str(int(msg.status))
        return row
    row["SOG"] = _number(msg.speed, 1)
    row["COG"] = _number(msg.course, 1)
    row["Heading"] = str(int(msg.heading))
    if msg_type in (1, 2, 3):
        row["Status"] = str(int(msg.status))
        row["ROT"] = _rate_of_turn(sentence.bv.get_num(42, 8, signed=True))
    return row


def _rate_of_turn(rot_ais: int) -> str | None:
    """Degrees per minute from the raw ROT field (read from the bits: pyais rounds it to whole
    degrees). -128 = not available, kept. +-127 = turning faster than 5 deg per 30 s without a turn
    indicator: it states a direction but no rate, so it becomes NULL."""
    if rot_ais == -128:
        return "-128"
    if abs(rot_ais) == 127:
        return None
    # ROT_AIS = 4.733 * sqrt(ROT in degrees/min), signed
    return _number(math.copysign((rot_ais / 4.733) ** 2, rot_ais), 1)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).rstrip("@ ").strip()  # '@' is AIS six-bit padding
    return text or None


def _static_fields(msg_type: int, msg: Any) -> dict[str, str]:
    """The static fields a type 5, 19 or 24 report carries; missing or not-available (0, '') left out
    so they do not overwrite an earlier real value."""
    found: dict[str, str | None] = {}
    if msg_type in (5, 19) or (msg_type == 24 and getattr(msg, "partno", None) == 0):
        found["VesselName"] = _text(msg.shipname)
    if msg_type in (5, 24):
        found["CallSign"] = _text(getattr(msg, "callsign", None))
    ship_type = getattr(msg, "ship_type", None)
    if ship_type:  # 0 = not available
        found["VesselType"] = str(int(ship_type))
    bow, stern = getattr(msg, "to_bow", None), getattr(msg, "to_stern", None)
    port, starboard = getattr(msg, "to_port", None), getattr(msg, "to_starboard", None)
    if bow is not None and stern is not None and bow + stern > 0:
        found["Length"] = str(bow + stern)
    if port is not None and starboard is not None and port + starboard > 0:
        found["Width"] = str(port + starboard)
    if msg_type == 5:
        imo = msg.imo
        # IMO numbers have 7 digits; 0 is "not available", larger values are not IMO numbers
        found["IMO"] = f"IMO{imo:07d}" if imo is not None and 0 < imo <= 9_999_999 else None
        found["Draft"] = _number(msg.draught, 1) if msg.draught else None
        found["Destination"] = _text(msg.destination)
    return {k: v for k, v in found.items() if v is not None}
