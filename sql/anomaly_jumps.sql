-- Impossible jumps (category: anomalies & data quality): the reports staging set aside as
-- 'impossible_jump' (table stg_flagged_positions), each with the implied speeds from the vessel's
-- neighbouring kept reports (stg_ais_positions) and how far it lies off the track between them.
-- Reports inside an identity-conflict episode (table fact_identity_conflicts, made by
-- sql/identity_conflicts.sql, which must run first) are left out: they are reported as the conflict.
-- No params. Units: knots, nm, UTC timestamps.
with jumps as (
    select mmsi, ts, lat, lon, sog_kn, row_hash
    from stg_flagged_positions
    where reject_reason = 'impossible_jump'
),

-- a jump inside an identity conflict is the second transmitter, not a position error
not_conflicts as (
    select j.*
    from jumps j
    anti join fact_identity_conflicts c on c.mmsi = j.mmsi and j.ts between c.start and c."end"
),

-- the kept reports of the vessels with a jump only (the as-of joins below match on the vessel, so
-- no other vessel's reports can be a neighbour; this spares them sorting every report)
neighbours as (
    select mmsi, ts, lat, lon
    from stg_ais_positions
    semi join (select distinct mmsi from not_conflicts) using (mmsi)
),

with_previous as (
    select j.*, p.ts as prev_ts, p.lat as prev_lat, p.lon as prev_lon
    from not_conflicts j
    asof left join neighbours p on p.mmsi = j.mmsi and j.ts > p.ts
),

with_next as (
    select j.*, n.ts as next_ts, n.lat as next_lat, n.lon as next_lon
    from with_previous j
    asof left join neighbours n on n.mmsi = j.mmsi and j.ts < n.ts
),

speeds as (
    select
        *,
        haversine_nm(prev_lat, prev_lon, lat, lon)
            / greatest(date_diff('second', prev_ts, ts), 1) * 3600.0 as knots_from_previous,
        haversine_nm(lat, lon, next_lat, next_lon)
            / greatest(date_diff('second', ts, next_ts), 1) * 3600.0 as knots_to_next,
        -- where the vessel should have been: linear between its neighbours (short way round +-180)
        date_diff('millisecond', prev_ts, ts) / greatest(date_diff('millisecond', prev_ts, next_ts), 1) as fraction
    from with_next
),

final as (
    select
        mmsi, ts, lat, lon, sog_kn,
        prev_ts, prev_lat, prev_lon, next_ts, next_lat, next_lon,
        knots_from_previous,
        knots_to_next,
        haversine_nm(
            prev_lat + (next_lat - prev_lat) * fraction,
            prev_lon + lon_delta_deg(prev_lon, next_lon) * fraction,
            lat, lon
        ) as off_track_nm,
        hash_hex(row_hash) as source_hash
    from speeds
)

select * from final
order by mmsi, ts
