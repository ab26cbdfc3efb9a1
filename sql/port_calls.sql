-- Port calls, detected as port visits: consecutive reports whose nearest port (table ports:
-- port_name, locode, lat, lon) is within $port_radius_nm form one visit, moving or not, so an
-- anchorage wait followed by the shift to the berth is one call. The call runs from the first to
-- the last stopped report of the visit and must last at least $min_call_minutes.
-- Stopped: SOG <= $stopped_max_sog_kn knots; when SOG is not available (NULL), navigational status
-- 1 (at anchor) or 5 (moored) decides. Reports with neither are skipped: they cannot say.
-- Category: port & area activity.
with positions as (
    select mmsi, ts, lat, lon, sog_kn, nav_status, vessel_name, vessel_type, row_hash
    from stg_ais_positions
    where sog_kn is not null or nav_status is not null
),

port_table as (
    select port_name, locode, lat as port_lat, lon as port_lon from ports
),

stopped as (
    select
        *,
        coalesce(sog_kn <= cast($stopped_max_sog_kn as double), nav_status in (1, 5)) as is_stopped
    from positions
),

-- bounding-box prefilter (1 degree of latitude = 60 nm) before the exact haversine distance
near_port as (
    select
        s.mmsi, s.ts, p.locode, p.port_name,
        haversine_nm(p.port_lat, p.port_lon, s.lat, s.lon) as distance_nm
    from stopped s
    join port_table p
      on s.lat between p.port_lat - cast($port_radius_nm as double) / 60 and p.port_lat + cast($port_radius_nm as double) / 60
     and abs(s.lon - p.port_lon) * cos(radians(p.port_lat)) <= cast($port_radius_nm as double) / 60
),

nearest_port as (
    select mmsi, ts, locode, port_name, distance_nm
    from near_port
    where distance_nm <= cast($port_radius_nm as double)
    qualify row_number() over (partition by mmsi, ts order by distance_nm, locode) = 1
),

states as (
    select
        s.*,
        n.locode,
        n.port_name,
        min(s.ts) over (partition by s.mmsi) as vessel_first_seen,
        max(s.ts) over (partition by s.mmsi) as vessel_last_seen
    from stopped s
    left join nearest_port n using (mmsi, ts)
),

islands as (
    select
        *,
        sum(case when locode is distinct from prev_locode then 1 else 0 end)
            over (partition by mmsi order by ts, row_hash) as island
    from (
        select *, lag(locode) over (partition by mmsi order by ts, row_hash) as prev_locode from states
    )
),

calls as (
    select
        mmsi,
        any_value(locode) as locode,
        any_value(port_name) as port_name,
        min(ts) as arrival,
        max(ts) as departure,
        count(*) as n_positions,
        sum(case when nav_status = 1 then 1 else 0 end) as n_anchored,
        max(vessel_name) as vessel_name,
        max(vessel_type) as vessel_type,
        min(ts) = any_value(vessel_first_seen) as arrival_before_data,
        max(ts) = any_value(vessel_last_seen) as departure_after_data,
        md5(string_agg(row_hash, ',' order by ts, row_hash)) as source_hash
    from islands
    where locode is not null and is_stopped
    group by mmsi, island
),

final as (
    select
        mmsi, locode, port_name, arrival, departure,
        date_diff('second', arrival, departure) / 60.0 as dwell_minutes,
        n_positions, n_anchored, vessel_name, vessel_type,
        arrival_before_data, departure_after_data, source_hash
    from calls
    where date_diff('second', arrival, departure) / 60.0 >= cast($min_call_minutes as double)
)

select * from final
order by mmsi, arrival
