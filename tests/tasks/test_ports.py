import re

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
