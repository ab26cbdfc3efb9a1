-- Movement summary per vessel and fixed time window (category: movement & kinematics).
-- Params: $window_minutes (window length), $min_positions (fewer positions: no fact).
-- Units: speeds knots, distance nautical miles (haversine_nm in sql/macros.sql).
with positions as (
    select mmsi, ts, lat, lon, sog_kn, nav_status, vessel_name, vessel_type, row_hash
    from stg_ais_positions
),

windowed as (
    select
        *,
        time_bucket(to_minutes(cast($window_minutes as integer)), ts) as window_start
    from positions
),

steps as (
    select
        *,
        lag(lat) over by_time as prev_lat,
        lag(lon) over by_time as prev_lon
    from windowed
    window by_time as (partition by mmsi, window_start order by ts, row_hash)
),

distances as (
    select
        *,
        coalesce(haversine_nm(prev_lat, prev_lon, lat, lon), 0) as step_nm
    from steps
),

final as (
    select
        mmsi,
        window_start,
        window_start + to_minutes(cast($window_minutes as integer)) as window_end,
        count(*) as n_positions,
        count(sog_kn) as n_speeds,
        min(ts) as first_seen,
        max(ts) as last_seen,
        avg(sog_kn) as mean_sog_kn,
        max(sog_kn) as max_sog_kn,
        sum(step_nm) as distance_nm,
        max(vessel_name) as vessel_name,
        max(vessel_type) as vessel_type,
        md5(string_agg(row_hash, ',' order by ts, row_hash)) as source_hash
    from distances
    group by mmsi, window_start
    having count(*) >= cast($min_positions as integer) and count(sog_kn) > 0
)

select * from final
order by mmsi, window_start
