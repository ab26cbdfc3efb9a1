"""The port table: where vessels call.

Two formats are read, told apart by their header:
- the project's CSV: port_name,locode,lat,lon[,region] (default: about 20 real US ports with
  their UN/LOCODE, tasks/data/us_ports.csv);
- the NGA World Port Index (Pub. 150) CSV, `UpdatedPub150.csv` as NGA exports it (plain or
  .gz), mapped to the same columns: port_name = Main Port Name, locode = the UN/LOCODE (space
  removed: NGA writes `US LAX`) or, where the port has none or shares it, WPI<index number>,
  region = Region Name without its ` -- <number>` suffix.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pandas as pd

from tasks.errors import InputError

DEFAULT_PORTS_PATH = Path(__file__).parent / "data" / "us_ports.csv"
PORT_COLUMNS = ("port_name", "locode", "lat", "lon")
OPTIONAL_PORT_COLUMNS = ("region",)
EXPECTED_HEADER = ",".join(PORT_COLUMNS) + "[,region]"
FORMATS_HINT = f"a CSV with header {EXPECTED_HEADER} or the NGA World Port Index CSV (UpdatedPub150.csv)"

# UN/LOCODE: 2-letter country + 3 letters or digits 2-9; ports without one get WPI<index number>
LOCODE_PATTERN = r"[A-Z]{2}[A-Z2-9]{3}|WPI\d+(\.\d+)?"

# the World Port Index columns the mapping reads (NGA spelling)
WPI_NUMBER, WPI_NAME, WPI_LOCODE, WPI_REGION = "World Port Index Number", "Main Port Name", "UN/LOCODE", "Region Name"
WPI_LAT, WPI_LON = "Latitude", "Longitude"
WPI_COLUMNS = (WPI_NUMBER, WPI_NAME, WPI_LOCODE, WPI_REGION, WPI_LAT, WPI_LON)


def load_ports(path: Path | None = None) -> pd.DataFrame:
    """Read a port table (project CSV or NGA World Port Index CSV) as columns port_name, locode,
    lat, lon (+ region when the file has one)."""
    path = Path(path) if path is not None else DEFAULT_PORTS_PATH
    if not path.is_file():
        raise InputError(
            f"port table {path} does not exist; set ports.path to {FORMATS_HINT}, "
            "or leave it empty for the built-in US ports"
        )
    try:
        # utf-8-sig: NGA's export starts with a byte-order mark that would otherwise glue onto the first column name
        header = pd.read_csv(path, nrows=0, encoding="utf-8-sig")
        if WPI_NUMBER in header.columns or WPI_NAME in header.columns:
            return world_port_index(_read_wpi(path), origin=str(path))
        table = pd.read_csv(path, dtype={"port_name": str, "locode": str, "region": str}, keep_default_na=False,
                            encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError, zlib.error,
            gzip.BadGzipFile) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"port table {path} is not a readable CSV ({message}); expected {FORMATS_HINT}") from None
    return check_ports(table, origin=str(path))


def _read_wpi(path: Path) -> pd.DataFrame:
    # every field as text: NGA writes missing text as a single space and numbers as floats (7950.0)
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")


def world_port_index(table: pd.DataFrame, origin: str = "World Port Index") -> pd.DataFrame:
    """Map an NGA World Port Index table (all columns text) to the port table columns."""
    missing = [column for column in WPI_COLUMNS if column not in table.columns]
    if missing:
        raise InputError(
            f"{origin} looks like an NGA World Port Index CSV but lacks column(s) {', '.join(missing)}; "
            "use the UpdatedPub150.csv that NGA publishes, unedited"
        )
    wpi = table[list(WPI_COLUMNS)].apply(lambda column: column.str.strip())
    number = pd.to_numeric(wpi[WPI_NUMBER], errors="coerce")
    if number.isna().any():
        row = int(number.isna().idxmax())
        raise InputError(f"{origin}: World Port Index Number {table[WPI_NUMBER].iloc[row]!r} in row {row + 1} is not a number")
    # two listings of one port under one index number (e.g. 400 Seydhisfjordhur / Seydisfjordur): keep the first
    wpi = wpi.assign(_number=number)[~number.duplicated()].reset_index(drop=True)
    # `US LAX` -> `USLAX`; values that are not a UN/LOCODE (`CL`, `GBME""`) count as absent
    unlocode = wpi[WPI_LOCODE].str.replace(" ", "", regex=False)
    unlocode = unlocode.where(unlocode.str.fullmatch(r"[A-Z]{2}[A-Z2-9]{3}"), "")
    # a UN/LOCODE that several ports share (29 codes in the 2025 export) names none of them for sure
    unlocode = unlocode.where(~unlocode.duplicated(keep=False) | (unlocode == ""), "")
    wpi_id = "WPI" + wpi["_number"].map(lambda n: f"{n:g}" if n != int(n) else str(int(n)))
    ports = pd.DataFrame({
        "port_name": wpi[WPI_NAME],
        "locode": unlocode.where(unlocode != "", wpi_id),
        "lat": wpi[WPI_LAT],
        "lon": wpi[WPI_LON],
        "region": wpi[WPI_REGION].str.replace(r"\s*--\s*\d+$", "", regex=True),
    })
    return check_ports(ports, origin=origin)


def check_ports(table: pd.DataFrame, origin: str = "port table") -> pd.DataFrame:
    """Return the port columns of `table` with numeric lat/lon, or raise InputError saying what to fix."""
    missing = [column for column in PORT_COLUMNS if column not in table.columns]
    if missing:
        raise InputError(
            f"{origin} lacks column(s) {', '.join(missing)}; expected header {EXPECTED_HEADER} "
            f"or an NGA World Port Index CSV (found {', '.join(map(str, table.columns)) or 'no columns'})"
        )
    if table.empty:
        raise InputError(f"{origin} has no rows; add at least two ports (header {EXPECTED_HEADER})")
    columns = list(PORT_COLUMNS) + [c for c in OPTIONAL_PORT_COLUMNS if c in table.columns]
    ports = table[columns].copy().reset_index(drop=True)
    ports["locode"] = ports["locode"].astype(str).str.strip()
    ports["port_name"] = ports["port_name"].astype(str).str.strip()
    for column, limit in (("lat", 90.0), ("lon", 180.0)):
        values = pd.to_numeric(ports[column], errors="coerce")
        bad = values.isna() | (values.abs() > limit)
        if bad.any():
            row = int(bad.idxmax())
            raise InputError(
                f"{origin}: {column} must be a number in [-{limit:g}, {limit:g}] "
                f"(row {row + 1}, port {ports.at[row, 'port_name']!r}, got {table[column].iloc[row]!r}); fix that value"
            )
        ports[column] = values.astype(float)
    empty_locode = ports["locode"].isin(["", "nan", "None"])
    if empty_locode.any():
        row = int(empty_locode.idxmax())
        raise InputError(
            f"{origin}: locode is empty in row {row + 1} (port {ports.at[row, 'port_name']!r}); "
            "give every port its UN/LOCODE, e.g. USLAX"
        )
    malformed = ~ports["locode"].str.fullmatch(LOCODE_PATTERN)
    if malformed.any():
        row = int(malformed.idxmax())
        raise InputError(
            f"{origin}: locode {ports.at[row, 'locode']!r} in row {row + 1} is not a UN/LOCODE "
            "(2-letter country + 3 letters or digits 2-9, upper case, no space, e.g. USLAX; or WPI<index number>)"
        )
    duplicated = ports["locode"].duplicated()
    if duplicated.any():
        locode = ports.at[int(duplicated.idxmax()), "locode"]
        raise InputError(f"{origin}: locode {locode} appears more than once; keep one row per port")
    return ports
