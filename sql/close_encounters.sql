-- Close encounters (category: safety & encounters): pairs of underway vessels whose closest point of
-- approach (CPA), dead-reckoned from their reports in one time bucket, is at most $encounter_cpa_nm
-- and comes within the next $encounter_tcpa_minutes; one row per pair and approach, with the
-- approach's COLREG situation (head_on, crossing, overtaking).
-- Params: $encounter_min_sog_kn (both vessels at least this fast, knots), $encounter_bucket_minutes,
-- $encounter_cpa_nm (nm), $encounter_tcpa_minutes.
-- Units: nm, knots, degrees true, minutes; cpa_time / detected_at / buckets are UTC timestamps.
-- Geometry: a flat east/north (equirectangular) projection around each pair (sql/macros_geo.sql),
-- longitudes differenced the short way round, so pairs across +-180 work.
-- Cost: no all-pairs join. A vessel can take part in an encounter only with vessels inside its
-- reach box (half its CPA limit plus what it sails in the horizon + one bucket); each report is
-- listed in the grid cells its box meets, and only reports sharing a cell are paired. Two vessels
-- that can meet have overlapping boxes, so they share a cell: nothing that qualifies is missed.
with settings as (
    select
        cast($encounter_min_sog_kn as double) as min_sog_kn,
        cast($encounter_bucket_minutes as integer) as bucket_minutes,
        cast($encounter_cpa_nm as double) as cpa_max_nm,
        cast($encounter_tcpa_minutes as double) as tcpa_max_minutes,
        -- hours a vessel can sail between its report and the latest CPA that counts: the other
        -- vessel's report may be up to a bucket later, and the CPA up to the horizon after that
        (cast($encounter_tcpa_minutes as double) + cast($encounter_bucket_minutes as double)) / 60.0 as reach_hours,
        -- grid cell: the reach of a 40-knot vessel (a tuning choice: it changes cost, never results;
        -- measured fastest on a synthetic US-scale day among 10-65 knot equivalents)
        cast($encounter_cpa_nm as double)
            + 40.0 * (cast($encounter_tcpa_minutes as double) + cast($encounter_bucket_minutes as double)) / 60.0 as cell_nm
),

-- the plausible maximum SOG per AIS ship-type code (table vessel_type_max_speed, ranges expanded)
type_limits as (
    select unnest(range(type_from, type_to + 1)) as vessel_type, max_sog_kn as limit_kn
    from vessel_type_max_speed
),

-- underway: SOG at least the minimum and a known course (NULL SOG/COG cannot be dead-reckoned)
underway as (
    select p.mmsi, p.ts, p.lat, p.lon, p.sog_kn, p.cog_deg, p.row_hash,
           time_bucket(to_minutes(s.bucket_minutes), p.ts) as bucket
    from stg_ais_positions p
    cross join settings s
    left join type_limits l on l.vessel_type = p.vessel_type
    where p.sog_kn >= s.min_sog_kn and p.cog_deg is not null
      -- a SOG above the type's plausible maximum is a transponder glitch (speed_anomalies flags it):
      -- never dead-reckoned; the vessel's next report in the bucket speaks for it
      and (l.limit_kn is null or p.sog_kn <= l.limit_kn)
),

-- each vessel's first underway report in a bucket speaks for it there (two reports of one vessel
-- in the same second share a position: staging sets other ones aside; either may be taken)
bucket_reports as (
    select
        mmsi,
        bucket,
        arg_min({'ts': ts, 'lat': lat, 'lon': lon, 'sog_kn': sog_kn, 'cog_deg': cog_deg, 'row_hash': row_hash}, ts) as r
    from underway
    group by mmsi, bucket
),

reaches as (
    select
        b.mmsi, b.bucket, b.r.ts, b.r.lat, b.r.lon, b.r.sog_kn, b.r.cog_deg, b.r.row_hash,
        -- reach: two vessels closer than the sum of their reaches can meet within the CPA limit
        s.cpa_max_nm / 2 + b.r.sog_kn * s.reach_hours as reach_nm,
        s.cell_nm,
        s.cell_nm / 60.0 as band_deg
    from bucket_reports b, settings s
),

-- the latitude bands each reach box meets (60 nm per degree errs on the wide side)
box_bands as (
    select
        *,
        unnest(range(cast(floor((lat - reach_nm / 60.0) / band_deg) as bigint),
                     cast(floor((lat + reach_nm / 60.0) / band_deg) as bigint) + 1)) as band
    from reaches
),

-- box width taken 1 degree poleward: two reaches never sum to 120 nm (AIS SOG tops at 102.2 kn),
-- so the pair's mid latitude is within 1 degree of both
box_widths as (
    select
        mmsi, bucket, band, lon,
        grid_lon_cells(band, band_deg, cell_nm) as n_cells,
        box_lon_deg(lat, reach_nm, 1.0) as half_lon_deg
    from box_bands
),

-- and the longitude cells the box meets in each band
box_cells as materialized (
    select mmsi, bucket, band, wrap_cell(k, n_cells) as lon_cell
    from (
        select mmsi, bucket, band, n_cells, unnest(grid_lon_cell_span(lon, half_lon_deg, n_cells)) as k
        from box_widths
    )
),

-- candidate pairs: reports of one bucket whose boxes share a cell (once, however many cells)
candidates as (
    select distinct a.bucket, a.mmsi as mmsi_a, b.mmsi as mmsi_b
    from box_cells a
    join box_cells b on b.bucket = a.bucket and b.band = a.band and b.lon_cell = a.lon_cell
    where a.mmsi < b.mmsi
),

paired as (
    select
        c.mmsi_a, c.mmsi_b, c.bucket,
        a.ts as ts_a, a.lat as lat_a, a.lon as lon_a, a.sog_kn as sog_a_kn, a.cog_deg as cog_a_deg, a.reach_nm as reach_a_nm,
        b.ts as ts_b, b.lat as lat_b, b.lon as lon_b, b.sog_kn as sog_b_kn, b.cog_deg as cog_b_deg, b.reach_nm as reach_b_nm,
        a.row_hash as hash_a, b.row_hash as hash_b
    from candidates c
    join reaches a on a.mmsi = c.mmsi_a and a.bucket = c.bucket
    join reaches b on b.mmsi = c.mmsi_b and b.bucket = c.bucket
),

offsets as (
    select
        *,
        greatest(ts_a, ts_b) as detected_at,
        east_nm(lat_a, lon_a, lat_b, lon_b) as raw_east_nm,
        north_nm(lat_a, lat_b) as raw_north_nm,
        east_kn(sog_b_kn, cog_b_deg) - east_kn(sog_a_kn, cog_a_deg) as rel_east_kn,
        north_kn(sog_b_kn, cog_b_deg) - north_kn(sog_a_kn, cog_a_deg) as rel_north_kn,
        -- hours each report is dead-reckoned forward to the later of the two report times
        date_diff('millisecond', ts_a, greatest(ts_a, ts_b)) / 3600000.0 as lead_a_h,
        date_diff('millisecond', ts_b, greatest(ts_a, ts_b)) / 3600000.0 as lead_b_h
    from paired
),

-- relative position of b from a at detected_at (both moved on along their course)
relative as (
    select
        *,
        raw_east_nm + east_kn(sog_b_kn, cog_b_deg) * lead_b_h - east_kn(sog_a_kn, cog_a_deg) * lead_a_h as east_nm,
        raw_north_nm + north_kn(sog_b_kn, cog_b_deg) * lead_b_h - north_kn(sog_a_kn, cog_a_deg) * lead_a_h as north_nm,
        rel_east_kn * rel_east_kn + rel_north_kn * rel_north_kn as rel_speed_sq
    from offsets
    -- farther apart than both reaches: cannot meet (a shortcut only, never drops an encounter)
    where raw_east_nm * raw_east_nm + raw_north_nm * raw_north_nm <= pow(reach_a_nm + reach_b_nm, 2)
),

-- TCPA = -(d . v) / |v|^2 hours; vessels keeping station (no relative motion) are at CPA now
cpa as (
    select
        *,
        case when rel_speed_sq < 1e-12 then 0.0
             else -(east_nm * rel_east_kn + north_nm * rel_north_kn) / rel_speed_sq end as tcpa_h
    from relative
),

detections as (
    select
        c.*,
        sqrt(pow(c.east_nm + c.rel_east_kn * c.tcpa_h, 2) + pow(c.north_nm + c.rel_north_kn * c.tcpa_h, 2)) as cpa_nm,
        c.tcpa_h * 60.0 as tcpa_minutes,
        c.detected_at + to_milliseconds(cast(round(c.tcpa_h * 3600000.0) as bigint)) as cpa_time,
        sqrt(c.east_nm * c.east_nm + c.north_nm * c.north_nm) as range_nm,
        s.bucket_minutes, s.tcpa_max_minutes
    from cpa c, settings s
    -- an encounter: CPA within the limit, reached between now and the horizon
    where c.tcpa_h * 60.0 between 0 and s.tcpa_max_minutes
      and sqrt(pow(c.east_nm + c.rel_east_kn * c.tcpa_h, 2) + pow(c.north_nm + c.rel_north_kn * c.tcpa_h, 2)) <= s.cpa_max_nm
),

-- reports saying a vessel is no longer underway (SOG below the minimum: slowed, anchored or
-- moored), of the vessels in a detection only
stopped as (
    select p.mmsi, p.ts
    from stg_ais_positions p, settings s
    where p.sog_kn < s.min_sog_kn
      and p.mmsi in (select mmsi_a from detections union all select mmsi_b from detections)
),

-- both still underway at the CPA: no report of either vessel saying it is no longer underway
-- between its dead-reckoned report and the CPA (vessels closing in a port just before they berth
-- are no close-quarters situation)
stops as (
    select d.mmsi_a, d.mmsi_b, d.bucket
    from detections d join stopped s on s.mmsi = d.mmsi_a and s.ts > d.ts_a and s.ts <= d.cpa_time
    union
    select d.mmsi_a, d.mmsi_b, d.bucket
    from detections d join stopped s on s.mmsi = d.mmsi_b and s.ts > d.ts_b and s.ts <= d.cpa_time
),

underway_at_cpa as (
    select * from detections anti join stops using (mmsi_a, mmsi_b, bucket)
),

timed as (
    select
        *,
        lag(bucket) over pair_time as prev_bucket,
        lag(cpa_time) over pair_time as prev_cpa_time
    from underway_at_cpa
    window pair_time as (partition by mmsi_a, mmsi_b order by bucket)
),

-- a detection continues the pair's previous approach when it is in the next bucket or predicts a
-- CPA within one bucket length of the previous detection's
approaches as (
    select
        *,
        sum(case
                when prev_bucket is not null
                 and (bucket - prev_bucket <= to_minutes(bucket_minutes)
                      or abs(date_diff('second', prev_cpa_time, cpa_time)) <= bucket_minutes * 60) then 0
                else 1
            end) over (partition by mmsi_a, mmsi_b order by bucket rows unbounded preceding) as approach_no
    from timed
),

-- the approach keeps its closest detection (smallest CPA, then earliest bucket)
closest as (
    select
        *,
        min(bucket) over approach as first_bucket,
        max(bucket) over approach as last_bucket,
        count(*) over approach as n_buckets
    from approaches
    window approach as (partition by mmsi_a, mmsi_b, approach_no)
    qualify row_number() over (partition by mmsi_a, mmsi_b, approach_no order by cpa_nm, bucket) = 1
),

-- geometry the moment the approach enters the horizon (cpa_time - $encounter_tcpa_minutes), so the
-- situation does not depend on which bucket saw it: b's offset from a then = offset at CPA - v * horizon
situations as (
    select
        *,
        angle_between_deg(cog_a_deg, cog_b_deg) as course_difference_deg,
        direction_deg(east_nm, north_nm) as bearing_deg,
        (direction_deg(east_nm, north_nm) - cog_a_deg + 360.0) % 360.0 as relative_bearing_deg,
        direction_deg(
            east_nm + rel_east_kn * (tcpa_h - tcpa_max_minutes / 60.0),
            north_nm + rel_north_kn * (tcpa_h - tcpa_max_minutes / 60.0)
        ) as horizon_bearing_deg
    from closest
),

colreg as (
    select
        *,
        (horizon_bearing_deg - cog_a_deg + 360.0) % 360.0 as horizon_relative_a_deg,
        (horizon_bearing_deg + 180.0 - cog_b_deg + 360.0) % 360.0 as horizon_relative_b_deg
    from situations
),

classified as (
    select
        *,
        case
            -- head-on: courses reciprocal within 10 degrees
            when course_difference_deg >= 170.0 then 'head_on'
            -- overtaking: courses within 67.5 deg, one vessel more than 22.5 deg abaft the other's beam
            when course_difference_deg < 67.5
             and (horizon_relative_a_deg > 112.5 and horizon_relative_a_deg < 247.5
                  or horizon_relative_b_deg > 112.5 and horizon_relative_b_deg < 247.5) then 'overtaking'
            -- crossing: every other approach
            else 'crossing'
        end as situation
    from colreg
),

final as (
    select
        c.mmsi_a,
        c.mmsi_b,
        c.situation,
        c.cpa_time,
        c.cpa_nm,
        c.tcpa_minutes,
        c.bucket,
        c.first_bucket,
        c.last_bucket,
        c.n_buckets,
        c.detected_at,
        c.range_nm,
        c.bearing_deg,
        c.relative_bearing_deg,
        c.course_difference_deg,
        c.cog_a_deg,
        c.cog_b_deg,
        c.sog_a_kn,
        c.sog_b_kn,
        c.lat_a,
        c.lon_a,
        c.lat_b,
        c.lon_b,
        -- provenance: the two reports behind the kept detection
        md5(c.hash_a || ',' || c.hash_b) as source_hash
    from classified c
)

select * from final
order by mmsi_a, mmsi_b, cpa_time
