-- Movement summary per vessel and fixed time window (category: movement & kinematics).
-- Params: $window_minutes (window length), $min_positions (fewer positions: no fact),
-- $stopped_max_sog_kn, $port_radius_nm, $berth_radius_nm (state rule below), $major_turn_deg.
-- Units: speeds knots, distance nautical miles (haversine_nm in sql/macros.sql), times minutes.
-- State of a report (underway / moored / anchored), one rule:
--   stopped = SOG <= $stopped_max_sog_kn, or when SOG is NULL nav status 1 or 5 (as port_calls);
--   not stopped -> underway; stopped with nav status 5 -> moored, with 1 -> anchored; otherwise
--   stopped within $berth_radius_nm of the nearest port -> moored, within $port_radius_nm -> anchored,
--   else underway (drifting at sea: underway in the COLREG sense); neither SOG nor status -> the
--   state of the window's previous report (none before it: counted in no state).
-- minutes_underway / _moored / _anchored: the time from each report to the next report of the
-- same window, attributed to the earlier report's state (they sum to last_seen - first_seen).
-- distance_nm: haversine steps between consecutive reports of the window, a step counting only when
-- either of its two reports is underway (a moored or anchored vessel's GPS jitter is not distance run).
-- major_course_changes: pairs of consecutive reports (reports without SOG or COG skipped) that are
-- both underway and moving (SOG > $stopped_max_sog_kn) whose COG differs by more than $major_turn_deg.
with positions as (
    select
        mmsi, ts, lat, lon, sog_kn, cog_deg, nav_status, vessel_name, vessel_type, row_hash,
        coalesce(sog_kn <= cast($stopped_max_sog_kn as double), nav_status in (1, 5)) as is_stopped
    from stg_ais_positions
),

-- ports by the 0.1-degree cells their radius can reach (macro port_cells in sql/macros.sql)
port_grid as (
    select * from port_cells('ports', cast($port_radius_nm as double))
),

-- distance to the nearest port, only for stopped reports whose nav status does not say
-- moored or at anchor (the only ones the rule needs it for)
stopped_near_port as (
    select s.mmsi, s.ts, min(haversine_nm(p.port_lat, p.port_lon, s.lat, s.lon)) as port_distance_nm
    from positions s
    join port_grid p
      on p.lat_idx = port_cell_lat(s.lat) and p.lon_idx = port_cell_lon(s.lon)
    where s.is_stopped and coalesce(s.nav_status not in (1, 5), true)
    group by s.mmsi, s.ts
),

states as (
    select
        p.mmsi, p.ts, p.lat, p.lon, p.sog_kn, p.cog_deg, p.row_hash,
        case
            when p.is_stopped is null then null
            when not p.is_stopped then 'underway'
            when p.nav_status = 5 then 'moored'
            when p.nav_status = 1 then 'anchored'
            when n.port_distance_nm <= cast($berth_radius_nm as double) then 'moored'
            when n.port_distance_nm <= cast($port_radius_nm as double) then 'anchored'
            else 'underway'
        end as reported_state,
        time_bucket(to_minutes(cast($window_minutes as integer)), p.ts) as window_start
    from positions p
    left join stopped_near_port n using (mmsi, ts)
),

-- COG of a moving underway report; -1 marks a report that breaks a run (stopped or not underway);
-- NULL (no SOG or no COG) is skipped
courses as (
    select
        mmsi, ts, lat, lon, row_hash, reported_state, window_start,
        case
            when sog_kn is null or cog_deg is null then null
            when sog_kn > cast($stopped_max_sog_kn as double) and reported_state = 'underway' then cog_deg
            else -1
        end as turn_cog
    from states
),

-- one window pass over the columns the order-dependent measures need (a narrow sort); every
-- function below shares the same partition and order
steps as (
    select
        *,
        lag(lat) over by_time as prev_lat,
        lag(lon) over by_time as prev_lon,
        date_diff('second', ts, lead(ts) over by_time) / 60.0 as to_next_minutes,
        last_value(reported_state ignore nulls) over (by_time rows between unbounded preceding and current row) as state,
        -- the previous report's state (its own, or carried from before it)
        lag(reported_state ignore nulls) over by_time as prev_state,
        lag(turn_cog ignore nulls) over by_time as prev_turn_cog
    from courses
    window by_time as (partition by mmsi, window_start order by ts, row_hash)
),

distances as (
    select
        *,
        -- a step counts when either end is underway: stopped-to-stopped steps are GPS noise
        case when 'underway' in (state, prev_state) then coalesce(haversine_nm(prev_lat, prev_lon, lat, lon), 0) else 0 end as step_nm,
        -- smallest angle between the two courses, 0-180 degrees
        case when turn_cog >= 0 and prev_turn_cog >= 0
             then abs(((turn_cog - prev_turn_cog + 540) % 360) - 180) end as course_change_deg
    from steps
),

-- the order-dependent measures per window
track_measures as (
    select
        mmsi,
        window_start,
        sum(step_nm) as distance_nm,
        coalesce(sum(to_next_minutes) filter (where state = 'underway'), 0) as minutes_underway,
        coalesce(sum(to_next_minutes) filter (where state = 'moored'), 0) as minutes_moored,
        coalesce(sum(to_next_minutes) filter (where state = 'anchored'), 0) as minutes_anchored,
        count(*) filter (where course_change_deg > cast($major_turn_deg as double)) as major_course_changes
    from distances
    group by mmsi, window_start
),

-- the order-free measures per window, straight from the reports (no sort)
report_measures as (
    select
        mmsi,
        time_bucket(to_minutes(cast($window_minutes as integer)), ts) as window_start,
        count(*) as n_positions,
        count(sog_kn) as n_speeds,
        min(ts) as first_seen,
        max(ts) as last_seen,
        avg(sog_kn) as mean_sog_kn,
        max(sog_kn) as max_sog_kn,
        max(vessel_name) as vessel_name,
        max(vessel_type) as vessel_type,
        -- provenance: an order-free hash of the source rows (macro row_hash_xor; no sort, no string building)
        row_hash_xor(row_hash) as source_hash
    from positions
    group by all
    having count(*) >= cast($min_positions as integer) and count(sog_kn) > 0
),

final as (
    select
        r.mmsi,
        r.window_start,
        r.window_start + to_minutes(cast($window_minutes as integer)) as window_end,
        r.n_positions, r.n_speeds, r.first_seen, r.last_seen, r.mean_sog_kn, r.max_sog_kn,
        t.distance_nm, t.minutes_underway, t.minutes_moored, t.minutes_anchored, t.major_course_changes,
        r.vessel_name, r.vessel_type, r.source_hash
    from report_measures r
    join track_measures t using (mmsi, window_start)
)

select * from final
order by mmsi, window_start
