-- Macros shared by the queries in sql/; loaded on every connection before a query runs.
-- Great-circle distance in nautical miles (haversine, mean earth radius 3440.065 nm = 6371.0 km;
-- tasks/geo.py uses the same formula).
create or replace temp macro haversine_nm(lat1, lon1, lat2, lon2) as
    2 * 3440.065 * asin(sqrt(
        pow(sin(radians(lat2 - lat1) / 2), 2)
        + cos(radians(lat1)) * cos(radians(lat2)) * pow(sin(radians(lon2 - lon1) / 2), 2)
    ));

-- row_hash (sql/stg_typed.sql) is the md5 of a raw row kept as a UUID: hash_hex gives the md5 as
-- 32 lowercase hex characters (where a hash is written as text), row_hash_xor the order-free hash of
-- a group of rows (an aggregate: the xor of the md5s of their hex texts, as hex). Both give what they
-- gave when row_hash was stored as hex text, so facts' source_hash, and the seed and example ids made
-- from it, did not change with the UUID; both take row_hash as a UUID or as hex text.
create or replace temp macro hash_hex(h) as replace(cast(h as varchar), '-', '');
create or replace temp macro row_hash_xor(h) as format('{:032x}', bit_xor(md5_number(hash_hex(h))));

-- The 0.1-degree cell of a position, longitude wrapped so cells join across +-180 (3600 round the globe).
create or replace temp macro port_cell_lat(lat) as cast(floor(lat / 0.1) as bigint);
create or replace temp macro port_cell_lon(lon) as ((cast(floor(lon / 0.1) as bigint) % 3600) + 3600) % 3600;

-- Every port of table `port_table` (port_name, locode, lat, lon) once per 0.1-degree cell its
-- radius_nm can reach, so positions find nearby ports by an equi-join on (lat_idx, lon_idx)
-- instead of positions x ports. 1 degree of latitude is 60.04 nm, so radius / 60 is a little wide
-- (safe); the longitude span widens with latitude, capped at the full circle.
create or replace temp macro port_cells(port_table, radius_nm) as table
    select distinct port_name, locode, port_lat, port_lon, lat_idx, ((lon_idx % 3600) + 3600) % 3600 as lon_idx
    from (
        select *, unnest(range(cast(floor((port_lon - lon_span) / 0.1) as bigint),
                               cast(floor((port_lon + lon_span) / 0.1) as bigint) + 1)) as lon_idx
        from (
            select *, unnest(range(cast(floor((port_lat - lat_span) / 0.1) as bigint),
                                   cast(floor((port_lat + lat_span) / 0.1) as bigint) + 1)) as lat_idx
            from (
                select port_name, locode, lat as port_lat, lon as port_lon, radius_nm / 60 as lat_span,
                       least(radius_nm / 60 / cos(radians(least(abs(lat) + radius_nm / 60, 89.9))), 180) as lon_span
                from query_table(port_table)
            )
        )
    );
