-- Cleans raw AIS rows (table raw_ais: the raw contract of tasks/sources/raw.py, all text).
-- One output row per input row: reject_reason is null for kept rows, else a machine-readable
-- reason and the row goes to quarantine. Units: lat/lon degrees WGS84, SOG knots, COG/heading
-- degrees true, ROT degrees per minute, length/width/draft metres, ts UTC.
-- Param: $max_implied_speed_kn (a report that needs more than this from both neighbours is a jump).
with source as (
    select * from raw_ais
),

typed as (
    select
        source_row,
        trim("MMSI") as mmsi_text,
        -- some NOAA vintages write integer columns as 95.0
        try_cast(try_cast(trim("MMSI") as double) as bigint) as mmsi,
        coalesce(
            try_strptime(trim("BaseDateTime"), '%Y-%m-%dT%H:%M:%S'),
            try_strptime(trim("BaseDateTime"), '%Y-%m-%d %H:%M:%S')
        ) as ts,
        try_cast("LAT" as double) as lat,
        try_cast("LON" as double) as lon,
        try_cast("SOG" as double) as sog_raw,
        try_cast("COG" as double) as cog_raw,
        try_cast(try_cast("Heading" as double) as integer) as heading_raw,
        nullif(trim("VesselName"), '') as vessel_name,
        nullif(nullif(trim("IMO"), ''), 'IMO0000000') as imo,
        nullif(trim("CallSign"), '') as call_sign,
        try_cast(try_cast("VesselType" as double) as integer) as vessel_type_raw,
        try_cast(try_cast("Status" as double) as integer) as status_raw,
        try_cast("Length" as double) as length_raw,
        try_cast("Width" as double) as width_raw,
        try_cast("Draft" as double) as draft_raw,
        try_cast(try_cast("Cargo" as double) as integer) as cargo,
        nullif(trim("TransceiverClass"), '') as transceiver_class,
        try_cast("ROT" as double) as rot_raw,
        nullif(trim("Destination"), '') as destination,
        source_file,
        -- NULL becomes chr(0) and fields are joined by chr(31) (unit separator), neither of which a
        -- CSV text field holds, so rows that differ only in which field is empty never hash alike
        md5(concat_ws(chr(31),
            coalesce("MMSI", chr(0)), coalesce("BaseDateTime", chr(0)), coalesce("LAT", chr(0)), coalesce("LON", chr(0)),
            coalesce("SOG", chr(0)), coalesce("COG", chr(0)), coalesce("Heading", chr(0)), coalesce("VesselName", chr(0)),
            coalesce("IMO", chr(0)), coalesce("CallSign", chr(0)), coalesce("VesselType", chr(0)), coalesce("Status", chr(0)),
            coalesce("Length", chr(0)), coalesce("Width", chr(0)), coalesce("Draft", chr(0)), coalesce("Cargo", chr(0)),
            coalesce("TransceiverClass", chr(0)), coalesce("ROT", chr(0)), coalesce("Destination", chr(0))
        )) as row_hash
    from source
),

not_available_to_null as (
    select
        * exclude (sog_raw, cog_raw, heading_raw, vessel_type_raw, status_raw, length_raw, width_raw, draft_raw, rot_raw),
        case when sog_raw >= 102.3 or sog_raw < 0 then null else sog_raw end as sog_kn,  -- 102.3 = not available
        case when cog_raw >= 360 or cog_raw < 0 then null else cog_raw end as cog_deg,   -- 360 = not available
        case when heading_raw between 0 and 359 then heading_raw end as heading_deg,     -- 511 = not available
        -- ROT -128 (raw) = not available; decoded to deg/min it is beyond the +-720 a transponder can send
        case when rot_raw = -128 or abs(rot_raw) > 720 then null else rot_raw end as rot_deg_min,
        nullif(vessel_type_raw, 0) as vessel_type,                                       -- 0 = not available
        case when status_raw between 0 and 14 then status_raw end as nav_status,         -- 15 = undefined
        nullif(length_raw, 0) as length_m,
        nullif(width_raw, 0) as width_m,
        nullif(draft_raw, 0) as draft_m
    from typed
),

flagged as (
    select
        *,
        case
            when mmsi is null then 'unparseable_mmsi'
            when ts is null then 'unparseable_timestamp'
            -- a ship MMSI is 9 digits whose MID (first 3 digits) lies in 201..775
            when mmsi not between 201000000 and 775999999 then 'invalid_mmsi'
            when lat is null or lon is null then 'missing_position'
            when lat = 91 or lon = 181 then 'position_not_available'
            when abs(lat) > 90 or abs(lon) > 180 then 'position_out_of_range'
            -- 0,0 is what a receiver without a fix sends, not a place ships go
            when lat = 0 and lon = 0 then 'null_island'
        end as invalid_reason,
        copies.copy_number
    from not_available_to_null
    -- numbered on two narrow columns, joined back: the window does not carry every column
    join (
        select source_row, row_number() over (partition by row_hash order by source_row) as copy_number
        from not_available_to_null
    ) copies using (source_row)
),

-- rows that passed the row checks, first copy of exact duplicates: the ones the track rules see
valid as (
    select * from flagged where invalid_reason is null and copy_number = 1
),

-- one vessel reported at two places at the same second: no way to tell which is true
conflicts as (
    select mmsi, ts
    from valid
    group by mmsi, ts
    having count(distinct (lat, lon)) > 1
),

neighbours as (
    select
        v.source_row,
        haversine_nm(lag(lat) over track, lag(lon) over track, lat, lon)
            / greatest(date_diff('second', lag(ts) over track, ts), 1) * 3600 as knots_from_previous,
        haversine_nm(lat, lon, lead(lat) over track, lead(lon) over track)
            / greatest(date_diff('second', ts, lead(ts) over track), 1) * 3600 as knots_to_next
    from valid v
    anti join conflicts c using (mmsi, ts)
    window track as (partition by mmsi order by ts, source_row)
),

-- a spike: getting there from the previous report and on to the next both need an impossible speed
jumps as (
    select source_row
    from neighbours
    where knots_from_previous > cast($max_implied_speed_kn as double)
      and knots_to_next > cast($max_implied_speed_kn as double)
),

final as (
    select
        f.source_row,
        f.source_file,
        f.mmsi_text,
        f.mmsi,
        f.ts,
        f.lat,
        f.lon,
        f.sog_kn,
        f.cog_deg,
        f.heading_deg,
        f.rot_deg_min,
        f.vessel_name,
        f.imo,
        f.call_sign,
        f.vessel_type,
        f.nav_status,
        f.length_m,
        f.width_m,
        f.draft_m,
        f.cargo,
        f.destination,
        f.transceiver_class,
        f.row_hash,
        case
            when f.invalid_reason is not null then f.invalid_reason
            when f.copy_number > 1 then 'duplicate_row'
            when c.mmsi is not null then 'conflicting_position'
            when j.source_row is not null then 'impossible_jump'
        end as reject_reason
    from flagged f
    left join conflicts c on c.mmsi = f.mmsi and c.ts = f.ts and f.invalid_reason is null
    left join jumps j on j.source_row = f.source_row
)

select * from final
