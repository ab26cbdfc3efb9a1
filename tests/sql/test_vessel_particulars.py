"""vessel_particulars (category: vessel identity & particulars) on hand-built positions."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pandas as pd

from tasks.anomalies import MID_FLAGS_CSV, load_reference_tables
from tasks.facts import check_fact_table
from tasks.sqlfiles import create_table_from_sql

T0 = datetime(2024, 1, 15, 23, 50, 0)


def _db(rows, conflicts=()):
    con = duckdb.connect()
    con.execute(
        "create table stg_ais_positions (mmsi bigint, ts timestamp, vessel_name varchar, imo varchar, call_sign varchar, "
        "vessel_type integer, length_m double, width_m double, draft_m double, transceiver_class varchar, "
        "destination varchar, row_hash uuid)"
    )
    con.executemany("insert into stg_ais_positions values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*r, f"{i:032x}") for i, r in enumerate(rows)])
    con.execute("create table fact_identity_conflicts (mmsi bigint, start timestamp)")
    con.executemany("insert into fact_identity_conflicts values (?, ?)", list(conflicts))
    load_reference_tables(con)
    create_table_from_sql(con, "fact_vessel_particulars", "vessel_particulars")
    return con, con.execute("select * from fact_vessel_particulars").df().set_index("mmsi")


def test_flag_type_name_and_most_broadcast_static_fields():
    ship = (366123456, None, "EVER GIVEN", "IMO9811000", "H3RC", 70, 400.0, 59.0, 14.5, "A", "USLAX")
    rows = [(ship[0], T0 + timedelta(minutes=3 * i), *ship[2:]) for i in range(6)]  # crosses midnight
    rows.append((366123456, T0 + timedelta(minutes=30), "EVER GIVN", "IMO9811000", "H3RC", 70, 400.0, 59.0, 15.1, "A", None))
    rows.append((219000123, T0, "DANA", None, None, 37, None, None, None, "B", None))
    con, out = _db(rows, conflicts=[(219000123, T0)])
    us, dk = out.loc[366123456], out.loc[219000123]
    assert (us.flag_country, us.flag_iso2, us.mid) == ("United States", "US", 366)
    assert us.vessel_name == "EVER GIVEN" and us.n_names == 2 and us.n_imos == 1  # the typo is counted, not kept
    assert us.vessel_type_name == "cargo" and us.max_draft_m == 15.1 and us.last_destination == "USLAX"
    assert us.n_positions == 7 and us.identity_conflicts == 0
    assert (dk.flag_country, dk.vessel_type_name, dk.identity_conflicts) == ("Denmark", "pleasure craft", 1)
    assert pd.isna(dk.length_m) and pd.isna(dk.imo)
    assert check_fact_table(con, "vessel_particulars") == []


def test_mid_table_covers_every_ship_mid_once():
    mids = pd.read_csv(MID_FLAGS_CSV, keep_default_na=False)  # NA is Namibia
    assert mids["mid"].is_unique and mids["mid"].between(201, 775).all()
    assert mids["flag_iso2"].str.fullmatch(r"[A-Z]{2}").all()
    # the MIDs of the simulator's fleet and of the real samples all resolve
    assert {338, 366, 367, 368, 369, 219, 220, 636, 538, 351, 477, 563}.issubset(set(mids["mid"]))


def test_namibia_is_not_a_missing_value():
    con = duckdb.connect()
    load_reference_tables(con)
    assert con.execute("select flag_iso2 from mid_flags where mid = 659").fetchall() == [("NA",)]
