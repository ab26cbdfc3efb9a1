-- Macros shared by the queries in sql/; loaded on every connection before a query runs.
-- Great-circle distance in nautical miles (haversine, mean earth radius 3440.065 nm = 6371.0 km;
-- tasks/geo.py uses the same formula).
create or replace temp macro haversine_nm(lat1, lon1, lat2, lon2) as
    2 * 3440.065 * asin(sqrt(
        pow(sin(radians(lat2 - lat1) / 2), 2)
        + cos(radians(lat1)) * cos(radians(lat2)) * pow(sin(radians(lon2 - lon1) / 2), 2)
    ))
