-- Types the raw AIS rows (raw_ais: the raw contract of tasks/sources/raw.py, all text; a table,
-- or for NOAA CSV a view over the files themselves) and applies the row rules: one output row per
-- raw row, in the order read. invalid_reason is null for rows that pass, else a machine-readable
-- reason; such rows carry their raw text as raw_payload (JSON) for the quarantine. The track rules
-- (duplicates, conflicts, jumps) are in sql/stg_track_rejects.sql.
-- Units: lat/lon degrees WGS84, SOG knots, COG/heading degrees true, ROT degrees per minute,
-- length/width/draft metres, ts UTC.
with source as (
    select * from raw_ais
),

typed as (
    select
        source_file,
        -- some NOAA vintages write integer columns as 95.0
        coalesce(try_cast(trim("MMSI") as bigint), try_cast(try_cast(trim("MMSI") as double) as bigint)) as mmsi,
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
        -- row_hash: the md5 of the raw fields, kept as a UUID (16 bytes; its text without the dashes
        -- is the md5 hex): cheaper to store, sort and join than 32 characters of text. NULL becomes
        -- chr(0) and fields are joined by chr(31) (unit separator), neither of which a CSV text
        -- field holds, so rows that differ only in which field is empty never hash alike
        cast(md5(concat_ws(chr(31),
            coalesce("MMSI", chr(0)), coalesce("BaseDateTime", chr(0)), coalesce("LAT", chr(0)), coalesce("LON", chr(0)),
            coalesce("SOG", chr(0)), coalesce("COG", chr(0)), coalesce("Heading", chr(0)), coalesce("VesselName", chr(0)),
            coalesce("IMO", chr(0)), coalesce("CallSign", chr(0)), coalesce("VesselType", chr(0)), coalesce("Status", chr(0)),
            coalesce("Length", chr(0)), coalesce("Width", chr(0)), coalesce("Draft", chr(0)), coalesce("Cargo", chr(0)),
            coalesce("TransceiverClass", chr(0)), coalesce("ROT", chr(0)), coalesce("Destination", chr(0))
        )) as uuid) as row_hash,
        -- the raw text, carried through for the rows that fail below
        "MMSI" as r_mmsi, "BaseDateTime" as r_ts, "LAT" as r_lat, "LON" as r_lon, "SOG" as r_sog, "COG" as r_cog,
        "Heading" as r_heading, "VesselName" as r_name, "IMO" as r_imo, "CallSign" as r_call_sign,
        "VesselType" as r_type, "Status" as r_status, "Length" as r_length, "Width" as r_width, "Draft" as r_draft,
        "Cargo" as r_cargo, "TransceiverClass" as r_class, "ROT" as r_rot, "Destination" as r_destination
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
        end as invalid_reason
    from not_available_to_null
),

final as (
    select
        source_file, mmsi, ts, lat, lon, sog_kn, cog_deg, heading_deg, rot_deg_min,
        vessel_name, imo, call_sign, vessel_type, nav_status, length_m, width_m, draft_m, cargo,
        destination, transceiver_class, row_hash, invalid_reason,
        case when invalid_reason is not null then to_json({
            'MMSI': r_mmsi, 'BaseDateTime': r_ts, 'LAT': r_lat, 'LON': r_lon, 'SOG': r_sog, 'COG': r_cog,
            'Heading': r_heading, 'VesselName': r_name, 'IMO': r_imo, 'CallSign': r_call_sign, 'VesselType': r_type,
            'Status': r_status, 'Length': r_length, 'Width': r_width, 'Draft': r_draft, 'Cargo': r_cargo,
            'TransceiverClass': r_class, 'ROT': r_rot, 'Destination': r_destination, 'source_file': source_file
        })::varchar end as raw_payload
    from flagged
)

select * from final
