-- AIS gaps (dark periods): two consecutive reports of one vessel more than $gap_minutes apart
-- (strictly more: a gap of exactly $gap_minutes is not a gap). gap_start / gap_end are the times
-- of the two bounding reports (UTC), with their positions; minutes = gap_end - gap_start.
-- Reports are the staged ones plus those staging flagged for track rules (table
-- stg_flagged_positions: impossible jumps, conflicting positions): a flagged report is still a
-- transmission received, so it ends a dark period.
-- Units: minutes, nautical miles (haversine_nm between the bounding reports), knots (implied
-- speed = distance / gap time; SOG of the bounding reports as sent).
-- Category: anomalies & data quality (AIS gaps / dark periods).
with received as (
    select mmsi, ts, lat, lon, sog_kn, vessel_name, vessel_type, row_hash from stg_ais_positions
    union all
    select mmsi, ts, lat, lon, sog_kn, vessel_name, vessel_type, row_hash from stg_flagged_positions
),

pairs as (
    select
        mmsi,
        ts as gap_start,
        lead(ts) over track as gap_end,
        lat as start_lat,
        lon as start_lon,
        lead(lat) over track as end_lat,
        lead(lon) over track as end_lon,
        sog_kn as start_sog_kn,
        lead(sog_kn) over track as end_sog_kn,
        vessel_name,
        vessel_type,
        row_hash as start_row_hash,
        lead(row_hash) over track as end_row_hash
    from received
    window track as (partition by mmsi order by ts, row_hash)
),

gaps as (
    select *, date_diff('second', gap_start, gap_end) / 60.0 as minutes
    from pairs
    where date_diff('second', gap_start, gap_end) / 60.0 > cast($gap_minutes as double)
),

final as (
    select
        mmsi, gap_start, gap_end, minutes,
        start_lat, start_lon, end_lat, end_lon,
        haversine_nm(start_lat, start_lon, end_lat, end_lon) as distance_nm,
        haversine_nm(start_lat, start_lon, end_lat, end_lon) / (minutes / 60.0) as implied_sog_kn,
        start_sog_kn, end_sog_kn, vessel_name, vessel_type,
        md5(hash_hex(start_row_hash) || ',' || hash_hex(end_row_hash)) as source_hash
    from gaps
)

select * from final
order by mmsi, gap_start
