"""The port table: where vessels call. Default: about 20 real US ports with their UN/LOCODE."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.errors import InputError

DEFAULT_PORTS_PATH = Path(__file__).parent / "data" / "us_ports.csv"
PORT_COLUMNS = ("port_name", "locode", "lat", "lon")
OPTIONAL_PORT_COLUMNS = ("region",)
EXPECTED_HEADER = ",".join(PORT_COLUMNS) + "[,region]"


def load_ports(path: Path | None = None) -> pd.DataFrame:
    """Read a port table CSV; columns port_name, locode, lat, lon (+ region when the file has it)."""
    path = Path(path) if path is not None else DEFAULT_PORTS_PATH
    if not path.is_file():
        raise InputError(
            f"port table {path} does not exist; set ports.path to a CSV with header {EXPECTED_HEADER} "
            "or leave it empty for the built-in US ports"
        )
    try:
        table = pd.read_csv(path, dtype={"port_name": str, "locode": str, "region": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"port table {path} is not a readable CSV ({message}); expected header {EXPECTED_HEADER}") from None
    return check_ports(table, origin=str(path))


def check_ports(table: pd.DataFrame, origin: str = "port table") -> pd.DataFrame:
    """Return the port columns of `table` with numeric lat/lon, or raise InputError saying what to fix."""
    missing = [column for column in PORT_COLUMNS if column not in table.columns]
    if missing:
        raise InputError(
            f"{origin} lacks column(s) {', '.join(missing)}; expected header {EXPECTED_HEADER} "
            f"(found {', '.join(map(str, table.columns)) or 'no columns'})"
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
    malformed = ~ports["locode"].str.fullmatch(r"[A-Z]{2}[A-Z2-9]{3}")
    if malformed.any():
        row = int(malformed.idxmax())
        raise InputError(
            f"{origin}: locode {ports.at[row, 'locode']!r} in row {row + 1} is not a UN/LOCODE "
            "(2-letter country + 3 letters or digits 2-9, upper case, no space, e.g. USLAX)"
        )
    duplicated = ports["locode"].duplicated()
    if duplicated.any():
        locode = ports.at[int(duplicated.idxmax()), "locode"]
        raise InputError(f"{origin}: locode {locode} appears more than once; keep one row per port")
    return ports
