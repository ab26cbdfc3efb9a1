-- Port stays: each port call (table fact_port_calls, the output of sql/port_calls.sql) split into
-- anchorage waits and berth stays. A stay is a maximal run of the call's stopped reports of one
-- kind; moving reports between (the shift from anchorage to berth) belong to no stay.
-- Kind of a stopped report: nav status 5 (moored) -> 'berth', 1 (at anchor) -> 'anchorage'; any
-- other or no status: farther than $berth_radius_nm from the port point -> 'anchorage', else 'berth'.
-- (The vessel's own status first: a gazetteer's port point is one spot, real terminals span miles.)
-- Stopped is port_calls' rule: SOG <= $stopped_max_sog_kn knots, NULL SOG -> nav status 1 or 5.
-- start/end: first/last report of the run (UTC); minutes = end - start; distances nautical miles.
-- truncated: the stay starts at the vessel's first stopped-or-status report or ends at its last,
-- so the data cannot show it whole (the call's arrival_before_data / departure_after_data).
-- Category: port & area activity (anchorage waits apart from berth stays).
with calls as (
    select mmsi, locode, port_name, arrival, departure, arrival_before_data, departure_after_data, vessel_name, vessel_type
    from fact_port_calls
),

port_table as (
    select locode, lat as port_lat, lon as port_lon from ports
),

-- the call's reports: between its arrival and departure every report was nearest to the call's port
call_reports as (
    select
        c.mmsi, c.locode, c.port_name, c.arrival, c.departure, c.arrival_before_data, c.departure_after_data,
        c.vessel_name, c.vessel_type,
        p.ts, p.row_hash, p.nav_status,
        haversine_nm(t.port_lat, t.port_lon, p.lat, p.lon) as distance_nm
    from stg_ais_positions p
    join calls c on p.mmsi = c.mmsi and p.ts between c.arrival and c.departure
    join port_table t on t.locode = c.locode
    where coalesce(p.sog_kn <= cast($stopped_max_sog_kn as double), p.nav_status in (1, 5))
),

kinds as (
    select
        *,
        case
            when nav_status = 5 then 'berth'
            when nav_status = 1 then 'anchorage'
            when distance_nm > cast($berth_radius_nm as double) then 'anchorage'
            else 'berth'
        end as kind
    from call_reports
),

runs as (
    select
        *,
        sum(case when kind is distinct from prev_kind then 1 else 0 end)
            over (partition by mmsi, arrival order by ts, row_hash) as stay_no
    from (
        select *, lag(kind) over (partition by mmsi, arrival order by ts, row_hash) as prev_kind from kinds
    )
),

stays as (
    select
        mmsi,
        arrival as call_arrival,
        stay_no,
        any_value(locode) as locode,
        any_value(port_name) as port_name,
        any_value(kind) as kind,
        min(ts) as "start",
        max(ts) as "end",
        count(*) as n_positions,
        avg(distance_nm) as mean_distance_nm,
        max(distance_nm) as max_distance_nm,
        (min(ts) = any_value(arrival) and any_value(arrival_before_data))
            or (max(ts) = any_value(departure) and any_value(departure_after_data)) as truncated,
        any_value(vessel_name) as vessel_name,
        any_value(vessel_type) as vessel_type,
        -- provenance: an order-free hash of the source rows (macro row_hash_xor; no sort, no string building)
        row_hash_xor(row_hash) as source_hash
    from runs
    group by mmsi, arrival, stay_no
),

final as (
    select
        mmsi, locode, port_name, kind, "start", "end",
        date_diff('second', "start", "end") / 60.0 as minutes,
        n_positions, mean_distance_nm, max_distance_nm, call_arrival, stay_no, truncated,
        vessel_name, vessel_type, source_hash
    from stays
)

select * from final
order by mmsi, "start"
