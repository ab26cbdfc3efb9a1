-- Track segments: runs of one vessel's staged reports with no gap over $gap_minutes between
-- consecutive reports (a gap of exactly $gap_minutes does not split). A voyage may span several.
-- Units: distance nautical miles (haversine_nm over consecutive reports inside the segment),
-- speeds knots, times UTC, minutes. gap_before_minutes: the silence that opened the segment (NULL
-- for a vessel's first). starts_with_data / ends_with_data: the segment begins at the vessel's first
-- report or ends at its last, so it may have begun earlier or gone on later.
-- Category: movement (track continuity) / anomalies & data quality.
with positions as (
    select mmsi, ts, lat, lon, sog_kn, vessel_name, vessel_type, row_hash
    from stg_ais_positions
),

steps as (
    select
        *,
        lag(ts) over track as prev_ts,
        haversine_nm(lag(lat) over track, lag(lon) over track, lat, lon) as step_nm
    from positions
    window track as (partition by mmsi order by ts, row_hash)
),

breaks as (
    select
        *,
        date_diff('second', prev_ts, ts) / 60.0 as since_prev_minutes,
        -- strictly more than the threshold opens a new segment
        case when prev_ts is null or date_diff('second', prev_ts, ts) / 60.0 > cast($gap_minutes as double) then 1 else 0 end as opens
    from steps
),

-- the reports that open a segment (few: one per vessel plus one per gap), numbered, each segment
-- running until the next one opens; a report opening a segment is the first of its second (the
-- report before it is more than $gap_minutes earlier), so segment bounds are times
openings as (
    select
        mmsi,
        ts as opened_at,
        lead(ts) over (partition by mmsi order by ts) as next_opened_at,
        -- double, as the running sum that numbered segments before (the fact table's type is unchanged)
        cast(row_number() over (partition by mmsi order by ts) as double) as segment_no
    from breaks
    where opens = 1
),

-- each report joins the segment it falls in (a join on the vessel, not a second sort of every report)
numbered as (
    select b.*, o.segment_no
    from breaks b
    join openings o
      on o.mmsi = b.mmsi and b.ts >= o.opened_at and (o.next_opened_at is null or b.ts < o.next_opened_at)
),

segments as (
    select
        mmsi,
        segment_no,
        min(ts) as "start",
        max(ts) as "end",
        count(*) as n_positions,
        -- the step into a segment's first report crosses the gap: not part of the segment
        coalesce(sum(case when opens = 0 then step_nm end), 0) as distance_nm,
        avg(sog_kn) as mean_sog_kn,
        max(sog_kn) as max_sog_kn,
        arg_min(lat, ts) as start_lat,
        arg_min(lon, ts) as start_lon,
        arg_max(lat, ts) as end_lat,
        arg_max(lon, ts) as end_lon,
        max(case when opens = 1 then since_prev_minutes end) as gap_before_minutes,
        max(vessel_name) as vessel_name,
        max(vessel_type) as vessel_type,
        -- provenance: an order-free hash of the source rows (macro row_hash_xor; no sort, no string building)
        row_hash_xor(row_hash) as source_hash
    from numbered
    group by mmsi, segment_no
),

final as (
    select
        mmsi, segment_no, "start", "end",
        date_diff('second', "start", "end") / 60.0 as minutes,
        n_positions, distance_nm, mean_sog_kn, max_sog_kn,
        start_lat, start_lon, end_lat, end_lon, gap_before_minutes,
        segment_no = 1 as starts_with_data,
        segment_no = max(segment_no) over (partition by mmsi) as ends_with_data,
        vessel_name, vessel_type, source_hash
    from segments
)

select * from final
order by mmsi, "start"
