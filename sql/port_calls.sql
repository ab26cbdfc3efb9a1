-- Port calls, detected as port visits: consecutive reports whose nearest port (table ports:
-- port_name, locode, lat, lon) is within $port_radius_nm form one visit, moving or not, so an
-- anchorage wait followed by the shift to the berth is one call. The call runs from the first to
-- the last stopped report of the visit and must last at least $min_call_minutes.
-- Stopped: SOG <= $stopped_max_sog_kn knots; when SOG is not available (NULL), navigational status
-- 1 (at anchor) or 5 (moored) decides. Reports with neither are skipped: they cannot say.
-- A long silence inside a visit does not split it (the vessel was seen stopped at the same port on
-- both sides). Distances in nautical miles (haversine_nm), times UTC, dwell in minutes.
-- Ports are found through 0.1-degree cells (an equi-join, no positions x ports product); a port's
-- cells wrap across +-180 degrees longitude, so ports beside the antimeridian are not missed.
-- Category: port & area activity. sql/port_stays.sql, sql/voyages.sql and sql/busiest_ports.sql
-- read this query's output (table fact_port_calls).
with positions as (
    select mmsi, ts, lat, lon, sog_kn, nav_status, vessel_name, vessel_type, row_hash
    from stg_ais_positions
    where sog_kn is not null or nav_status is not null
),

-- ports by the 0.1-degree cells their radius can reach (macro port_cells in sql/macros.sql)
port_grid as (
    select * from port_cells('ports', cast($port_radius_nm as double))
),

stopped as (
    select
        *,
        coalesce(sog_kn <= cast($stopped_max_sog_kn as double), nav_status in (1, 5)) as is_stopped
    from positions
),

near_port as (
    select
        s.mmsi, s.ts, p.locode, p.port_name,
        haversine_nm(p.port_lat, p.port_lon, s.lat, s.lon) as distance_nm
    from stopped s
    join port_grid p
      on p.lat_idx = port_cell_lat(s.lat) and p.lon_idx = port_cell_lon(s.lon)
),

-- the nearest port within the radius (ties: the smaller locode)
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
        n.port_name
    from stopped s
    left join nearest_port n using (mmsi, ts)
),

-- one sort of every report: its place in the vessel's track and the previous report's port
ordered as (
    select
        *,
        row_number() over track as report_no,
        lag(locode) over track as prev_locode
    from states
    window track as (partition by mmsi order by ts, row_hash)
),

-- an island (a run of consecutive reports with the same nearest port, or none) starts where the
-- port changes; islands at a port, each with the report numbers it spans (few rows: no second sort
-- of every report)
islands as (
    select mmsi, first_report, last_report
    from (
        select
            mmsi, locode, report_no as first_report,
            coalesce(lead(report_no) over (partition by mmsi order by report_no) - 1, 9223372036854775807) as last_report
        from ordered
        where locode is distinct from prev_locode
    )
    where locode is not null
),

-- the stopped reports at a port, each with the island it lies in
call_reports as (
    select o.*, i.first_report as island
    from ordered o
    join islands i on i.mmsi = o.mmsi and o.report_no between i.first_report and i.last_report
    where o.locode is not null and o.is_stopped
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
        -- provenance: an order-free hash of the source rows (macro row_hash_xor; no sort, no string building)
        row_hash_xor(row_hash) as source_hash
    from call_reports
    group by mmsi, island
),

-- first and last report of each vessel (an aggregate, cheaper than a window over every report)
vessel_span as (
    select mmsi, min(ts) as first_seen, max(ts) as last_seen from positions group by mmsi
),

final as (
    select
        c.mmsi, c.locode, c.port_name, c.arrival, c.departure,
        date_diff('second', c.arrival, c.departure) / 60.0 as dwell_minutes,
        c.n_positions, c.n_anchored, c.vessel_name, c.vessel_type,
        -- the call may have begun before the data or gone on after it
        c.arrival = v.first_seen as arrival_before_data,
        c.departure = v.last_seen as departure_after_data,
        c.source_hash
    from calls c
    join vessel_span v using (mmsi)
    where date_diff('second', c.arrival, c.departure) / 60.0 >= cast($min_call_minutes as double)
)

select * from final
order by mmsi, arrival
