-- Voyages: the underway passage of one vessel from the departure of one port call to the arrival
-- of its next port call (table fact_port_calls, the output of sql/port_calls.sql; from_locode may
-- equal to_locode for a round trip). The passage before a vessel's first call and after its last
-- are listed too, with the unknown end's port NULL and truncated = true (that end is not inside the
-- data), when the vessel was seen farther than $port_radius_nm from the known end's port (it came
-- from or went to sea, it did not just start moving in port); a vessel with no call has no voyage.
-- Params: $gap_minutes (reports more than this apart start a new track segment: n_segments),
-- $port_radius_nm (as in sql/port_calls.sql).
-- Units: distance nautical miles (haversine_nm over consecutive reports), speeds knots, minutes.
-- Category: port & area activity / movement (voyages, passage distance and time).
with calls as (
    select
        mmsi, locode, port_name, arrival, departure, arrival_before_data, departure_after_data,
        row_number() over (partition by mmsi order by arrival) as call_no,
        count(*) over (partition by mmsi) as n_calls
    from fact_port_calls
),

vessel_span as (
    select mmsi, min(ts) as first_seen, max(ts) as last_seen
    from stg_ais_positions
    where mmsi in (select mmsi from calls)
    group by mmsi
),

-- call -> next call of the same vessel
between_calls as (
    select
        mmsi,
        locode as from_locode, port_name as from_port_name,
        lead(locode) over by_call as to_locode, lead(port_name) over by_call as to_port_name,
        departure,
        lead(arrival) over by_call as arrival,
        false as truncated,
        null as known_locode
    from calls
    window by_call as (partition by mmsi order by call_no)
),

-- the vessel was already seen before its first call began: a passage whose departure is outside the data
before_first as (
    select c.mmsi, null as from_locode, null as from_port_name, c.locode as to_locode, c.port_name as to_port_name,
           s.first_seen as departure, c.arrival, true as truncated, c.locode as known_locode
    from calls c join vessel_span s using (mmsi)
    where c.call_no = 1 and not c.arrival_before_data and s.first_seen < c.arrival
),

-- the vessel was still seen after its last call ended: a passage whose arrival is outside the data
after_last as (
    select c.mmsi, c.locode, c.port_name, null, null, c.departure, s.last_seen as arrival, true as truncated,
           c.locode as known_locode
    from calls c join vessel_span s using (mmsi)
    where c.call_no = c.n_calls and not c.departure_after_data and s.last_seen > c.departure
),

voyage_list as (
    select * from between_calls where arrival is not null
    union all
    select * from before_first
    union all
    select * from after_last
),

-- every report of the vessels that call somewhere, with the step from the previous report
steps as (
    select
        mmsi, ts, lat, lon, sog_kn, row_hash,
        coalesce(haversine_nm(lag(lat) over track, lag(lon) over track, lat, lon), 0) as step_nm,
        coalesce(date_diff('second', lag(ts) over track, ts) / 60.0, 0) as step_minutes
    from stg_ais_positions
    where mmsi in (select mmsi from calls)
    window track as (partition by mmsi order by ts, row_hash)
),

voyage_reports as (
    select v.mmsi, v.departure, s.ts, s.sog_kn, s.row_hash,
           -- the step into a report belongs to the voyage when the report after departure is in it
           case when s.ts > v.departure then s.step_nm else 0 end as step_nm,
           case when s.ts > v.departure then s.step_minutes else 0 end as step_minutes,
           haversine_nm(p.lat, p.lon, s.lat, s.lon) as from_known_port_nm
    from voyage_list v
    join steps s on s.mmsi = v.mmsi and s.ts between v.departure and v.arrival
    left join ports p on p.locode = v.known_locode
),

voyage_stats as (
    select
        mmsi, departure,
        count(*) as n_positions,
        sum(step_nm) as distance_nm,
        1 + count(*) filter (where step_minutes > cast($gap_minutes as double)) as n_segments,
        max(step_minutes) as max_gap_minutes,
        avg(sog_kn) as mean_sog_kn,
        max(sog_kn) as max_sog_kn,
        max(from_known_port_nm) as max_from_known_port_nm,
        -- provenance: an order-free hash of the source rows (macro row_hash_xor; no sort, no string building)
        row_hash_xor(row_hash) as source_hash
    from voyage_reports
    group by mmsi, departure
),

final as (
    select
        v.mmsi, v.from_locode, v.from_port_name, v.to_locode, v.to_port_name, v.departure, v.arrival,
        date_diff('second', v.departure, v.arrival) / 60.0 as duration_minutes,
        s.distance_nm, s.n_positions, s.n_segments, s.max_gap_minutes, s.mean_sog_kn, s.max_sog_kn,
        v.truncated, s.source_hash
    from voyage_list v
    join voyage_stats s using (mmsi, departure)
    where not v.truncated or s.max_from_known_port_nm > cast($port_radius_nm as double)
)

select * from final
order by mmsi, departure
