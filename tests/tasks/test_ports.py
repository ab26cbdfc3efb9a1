import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from tasks.errors import InputError
from tasks.ports import DEFAULT_PORTS_PATH, load_ports

LOCODE = re.compile(r"^US[A-Z0-9]{3}$")


def _distance_nm(lat1, lon1, lat2, lon2):
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    h = np.sin((phi2 - phi1) / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * 3440.065 * np.arcsin(np.sqrt(h))


def test_default_table_holds_real_us_ports():
    ports = load_ports()
    assert list(ports.columns) == ["port_name", "locode", "lat", "lon", "region"]
    assert len(ports) >= 20
    assert all(LOCODE.match(code) for code in ports["locode"]), ports["locode"].tolist()
    assert ports["locode"].is_unique
    assert set(ports["region"]) == {"west", "gulf", "east"}
    assert {"USLAX", "USLGB", "USHOU", "USNYC", "USSEA"} <= set(ports["locode"])
    # continental US coasts
    assert ports["lat"].between(24, 49).all() and ports["lon"].between(-125, -66).all()


def test_default_table_writes_four_decimals():
    lines = DEFAULT_PORTS_PATH.read_text().splitlines()
    assert lines[0] == "port_name,locode,lat,lon,region"
    for line in lines[1:]:
        _, _, lat, lon, _ = line.split(",")
        assert re.fullmatch(r"-?\d+\.\d{4}", lat) and re.fullmatch(r"-?\d+\.\d{4}", lon), line


def test_only_los_angeles_and_long_beach_are_closer_than_8_nm():
    ports = load_ports()
    close = set()
    for i in range(len(ports)):
        for j in range(i + 1, len(ports)):
            a, b = ports.iloc[i], ports.iloc[j]
            if a["region"] == b["region"] and _distance_nm(a["lat"], a["lon"], b["lat"], b["lon"]) < 8:
                close.add(frozenset((a["locode"], b["locode"])))
    assert close <= {frozenset(("USLAX", "USLGB"))}


def test_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(InputError, match=r"does not exist.*port_name,locode,lat,lon"):
        load_ports(tmp_path / "nope.csv")


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "ports.csv"
    path.write_text("name,lat,lon\nLos Angeles,33.7,-118.3\n")
    with pytest.raises(InputError) as info:
        load_ports(path)
    message = str(info.value)
    assert "port_name, locode" in message and "expected header port_name,locode,lat,lon" in message
    assert "\n" not in message


def test_latitude_out_of_range_is_rejected(tmp_path):
    path = tmp_path / "ports.csv"
    path.write_text("port_name,locode,lat,lon\nNowhere,USXXX,95.0,-118.3\n")
    with pytest.raises(InputError, match=r"lat must be a number in \[-90, 90\].*Nowhere"):
        load_ports(path)


def test_longitude_out_of_range_is_rejected(tmp_path):
    path = tmp_path / "ports.csv"
    path.write_text("port_name,locode,lat,lon\nNowhere,USXXX,33.0,-218.3\n")
    with pytest.raises(InputError, match=r"lon must be a number in \[-180, 180\]"):
        load_ports(path)


def test_empty_locode_is_rejected(tmp_path):
    path = tmp_path / "ports.csv"
    path.write_text("port_name,locode,lat,lon\nLos Angeles,,33.7,-118.3\n")
    with pytest.raises(InputError, match="locode is empty"):
        load_ports(path)


def test_table_without_region_loads(tmp_path):
    path = tmp_path / "ports.csv"
    path.write_text("port_name,locode,lat,lon\nLos Angeles,USLAX,33.7250,-118.2700\nSeattle,USSEA,47.6,-122.36\n")
    ports = load_ports(path)
    assert list(ports.columns) == ["port_name", "locode", "lat", "lon"]
    assert ports["lat"].dtype == float


# --- NGA World Port Index ------------------------------------------------------------------

WPI_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ports" / "nga_wpi_pub150_UpdatedPub150.csv.gz"
WPI_HEADER = ("OID_,World Port Index Number,Region Name,Main Port Name,Alternate Port Name,UN/LOCODE,Country Code,"
              "Harbor Size,Latitude,Longitude")


def _wpi_file(path: Path, rows: list[str], gz: bool = False) -> Path:
    # as NGA writes it: UTF-8 with a byte-order mark, CRLF, missing text as one space, numbers as floats
    text = "\ufeff" + "\r\n".join([WPI_HEADER, *rows]) + "\r\n"
    if gz:
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def test_world_port_index_rows_map_to_port_columns(tmp_path):
    path = _wpi_file(tmp_path / "UpdatedPub150.csv", [
        "0.0,16080.0,United States W Coast -- 15555,Los Angeles, ,US LAX,United States,Large,33.750000000000000,-118.250000000000000",
        "1.0,7950.0,United States E Coast -- 6585,Maurer, , ,United States,Very Small,40.533332999999999,-74.250000000000000",
        "2.0,49454.5,India -- 49400,Kattupalli Port, ,INKTP,India,Small,13.306944444000001,80.352222221999995",
        '3.0,14090.0,Chile -- 14000,Puerto Sara, ,CL,Chile,Small,-52.633333000000000,-70.200000000000003',
        # one port listed twice under one index number: the first listing stays
        "4.0,400.0,Iceland -- 100,Seydhisfjordhur, ,IS SEY,Iceland,Small,65.266666999999998,-14.000000000000000",
        "5.0,400.0,Iceland -- 100,Seydisfjordur, ,ISSEY,Iceland,Small,65.266666666999996,-14.000000000000000",
        # two ports sharing one UN/LOCODE: neither keeps it
        "6.0,48266.0,UAE -- 48200,Zirkuh, ,AE ZUR,United Arab Emirates,Small,25.016667000000002,53.000000000000000",
        "7.0,48267.0,UAE -- 48200,Zirkuh Oil Field, ,AEZUR,United Arab Emirates,Small,24.866667000000000,53.049999999999997",
        "8.0,20150.0,Aleutian Islands -- 20100,Constantine Harbor, , ,United States,Small,51.400000000000000,179.300000000000000",
    ])
    ports = load_ports(path)
    assert list(ports.columns) == ["port_name", "locode", "lat", "lon", "region"]
    assert ports[["port_name", "locode"]].values.tolist() == [
        ["Los Angeles", "USLAX"], ["Maurer", "WPI7950"], ["Kattupalli Port", "INKTP"], ["Puerto Sara", "WPI14090"],
        ["Seydhisfjordhur", "ISSEY"], ["Zirkuh", "WPI48266"], ["Zirkuh Oil Field", "WPI48267"],
        ["Constantine Harbor", "WPI20150"],
    ]
    assert ports.loc[0, ["lat", "lon"]].tolist() == [33.75, -118.25]
    assert ports.loc[7, "lon"] == 179.3
    assert ports.loc[0, "region"] == "United States W Coast"


def test_real_world_port_index_loads(tmp_path):
    if not WPI_SAMPLE.exists():
        pytest.skip(f"World Port Index copy not found at {WPI_SAMPLE}")
    ports = load_ports(WPI_SAMPLE)
    # SOURCES.md: 3,805 rows, 3,803 distinct index numbers
    assert len(ports) == 3803 and ports["locode"].is_unique
    by_code = ports.set_index("locode")
    assert by_code.loc["USLAX", "port_name"] == "Los Angeles" and by_code.loc["USLAX", ["lat", "lon"]].tolist() == [33.75, -118.25]
    assert {"USLGB", "USHOU", "USNYC", "USSEA", "USMSY", "USSAV"} <= set(ports["locode"])
    # ports without a usable UN/LOCODE get their WPI index number: 460 blank, 5 malformed, 58 shared
    assert ports["locode"].str.startswith("WPI").sum() == 518
    # Krishnapatnam (49455) and Kattupalli (49454.5, a fractional index number) both carry INKRI
    assert {"WPI49455", "WPI49454.5"} <= set(ports["locode"]) and "INKRI" not in set(ports["locode"])
    # Aleutian ports across the antimeridian are kept
    assert ((ports["lon"] > 179) & (ports["lat"] > 50)).any() and (ports["lon"] < -176).any()


def test_world_port_index_gzip_and_missing_columns(tmp_path):
    gz = _wpi_file(tmp_path / "wpi.csv.gz", [
        "0.0,16080.0,United States W Coast -- 15555,Los Angeles, ,US LAX,United States,Large,33.75,-118.25"], gz=True)
    assert load_ports(gz)["locode"].tolist() == ["USLAX"]
    cut = tmp_path / "cut.csv"
    cut.write_text("World Port Index Number,Main Port Name,Latitude\n16080.0,Los Angeles,33.75\n")
    with pytest.raises(InputError) as info:
        load_ports(cut)
    message = str(info.value)
    assert "World Port Index" in message and "UN/LOCODE, Region Name, Longitude" in message and "\n" not in message


def test_unreadable_port_files_give_one_line_errors(tmp_path):
    broken = tmp_path / "ports.csv.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 definitely not gzip")
    with pytest.raises(InputError, match=r"is not a readable CSV .*World Port Index"):
        load_ports(broken)
    bad_lat = _wpi_file(tmp_path / "bad.csv", [
        "0.0,16080.0,United States W Coast -- 15555,Los Angeles, ,US LAX,United States,Large, ,-118.25"])
    with pytest.raises(InputError, match=r"lat must be a number .*Los Angeles"):
        load_ports(bad_lat)
