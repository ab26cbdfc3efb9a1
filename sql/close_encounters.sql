-- Close encounters (category: safety & encounters): pairs of underway vessels whose closest point of
-- approach (CPA), dead-reckoned from their reports in one time bucket, is at most $encounter_cpa_nm
-- and comes within the next $encounter_tcpa_minutes; one row per pair and approach, with the
-- approach's COLREG situation (head_on, crossing, overtaking).
-- Params: $encounter_min_sog_kn (both vessels at least this fast, knots), $encounter_bucket_minutes,
-- $encounter_cpa_nm (nm), $encounter_tcpa_minutes.
-- Units: nm, knots, degrees true, minutes; cpa_time / detected_at / buckets are UTC timestamps.
-- Geometry: a flat east/north (equirectangular) projection around each pair (sql/macros_geo.sql),
-- longitudes differenced the short way round, so pairs across +-180 work.
-- Cost: no all-pairs join. Two vessels can meet only when they are at most the sum of their
-- reaches apart (a reach: half the CPA limit plus what the vessel sails in the horizon + one
-- bucket), so at most twice the larger reach. Each report sits in one home grid cell and lists the
-- cells of a box twice its reach around it; a report is paired with the homes in its box whose
-- reach is smaller (the smaller MMSI on a tie), so the vessel with the larger reach finds each pair
-- exactly once: nothing that qualifies is missed and no pair needs de-duplicating. Each row carries
-- what the CPA needs, so nothing is joined back before the CPA test.
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
        -- 20-40 knot equivalents measured within 15 % of each other on a synthetic US-scale day)
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
        b.mmsi, b.bucket, b.r.ts, b.r.lat, b.r.lon,
        -- reach: two vessels closer than the sum of their reaches can meet within the CPA limit
        s.cpa_max_nm / 2 + b.r.sog_kn * s.reach_hours as reach_nm,
        -- velocity, knots east and north
        east_kn(b.r.sog_kn, b.r.cog_deg) as ve_kn,
        north_kn(b.r.sog_kn, b.r.cog_deg) as vn_kn,
        s.cell_nm,
        s.cell_nm / 60.0 as band_deg
    from bucket_reports b, settings s
),

-- home cell: the one grid cell holding the report's position (band and longitude cell in one number)
homes as (
    select
        mmsi, bucket, ts, lat, lon, reach_nm, ve_kn, vn_kn,
        grid_cell_id(home_band, grid_lon_cell(lon, grid_lon_cells(home_band, band_deg, cell_nm))) as cell
    from (select *, cast(floor(lat / band_deg) as bigint) as home_band from reaches)
),

-- search box: a report looks for partners within twice its reach. Two vessels that can meet are
-- at most the sum of their reaches apart, so at most twice the larger reach: the one with the
-- larger reach (the larger MMSI on a tie) finds the other's home cell in its box, exactly once.
-- The latitude bands the box meets (60 nm per degree errs on the wide side)...
search_bands as (
    select
        *,
        unnest(range(cast(floor((lat - 2 * reach_nm / 60.0) / band_deg) as bigint),
                     cast(floor((lat + 2 * reach_nm / 60.0) / band_deg) as bigint) + 1)) as band
    from reaches
),

-- ... and the longitude cells it meets in each band; box width taken 1 degree poleward: two reaches
-- never sum to 120 nm (AIS SOG tops at 102.2 kn), so the pair's mid latitude is within 1 degree of both
search_cells as (
    select
        mmsi, bucket, ts, lat, lon, reach_nm, ve_kn, vn_kn,
        -- nm per degree of longitude 1 degree poleward (at most what it is at the pair's mid latitude)
        60.0 * cos(radians(least(abs(lat) + 1.0, 90.0))) as lon_nm_per_deg,
        grid_cell_id(band, wrap_cell(unnest(grid_lon_cell_span(lon, box_lon_deg(lat, 2 * reach_nm, 1.0), n_cells)), n_cells)) as cell
    from (select *, grid_lon_cells(band, band_deg, cell_nm) as n_cells from search_bands)
),

-- candidate pairs: a home in the searcher's box with a smaller reach (or the same and a smaller
-- MMSI), no farther off than the two reaches on a slightly shrunk flat map (a cheap shortcut before
-- the exact test below: 60 nm per degree and the poleward longitude scale only shrink distances,
-- so nothing that can meet is dropped)
found as (
    select
        s.bucket,
        s.mmsi < h.mmsi as searcher_is_a,
        s.mmsi as mmsi_s, s.ts as ts_s, s.lat as lat_s, s.lon as lon_s, s.reach_nm as reach_s, s.ve_kn as ve_s, s.vn_kn as vn_s,
        h.mmsi as mmsi_h, h.ts as ts_h, h.lat as lat_h, h.lon as lon_h, h.reach_nm as reach_h, h.ve_kn as ve_h, h.vn_kn as vn_h
    from search_cells s
    join homes h on h.bucket = s.bucket and h.cell = s.cell
    where (h.reach_nm < s.reach_nm or (h.reach_nm = s.reach_nm and h.mmsi < s.mmsi))
      and pow((h.lat - s.lat) * 60.0, 2) + pow(least(abs(h.lon - s.lon), 360.0 - abs(h.lon - s.lon)) * s.lon_nm_per_deg, 2)
          <= pow(h.reach_nm + s.reach_nm, 2)
),

-- a is the vessel with the smaller MMSI (the geometry below is computed a to b, as always)
paired as (
    select
        bucket,
        if(searcher_is_a, mmsi_s, mmsi_h) as mmsi_a, if(searcher_is_a, mmsi_h, mmsi_s) as mmsi_b,
        if(searcher_is_a, ts_s, ts_h) as ts_a, if(searcher_is_a, ts_h, ts_s) as ts_b,
        if(searcher_is_a, lat_s, lat_h) as lat_a, if(searcher_is_a, lat_h, lat_s) as lat_b,
        if(searcher_is_a, lon_s, lon_h) as lon_a, if(searcher_is_a, lon_h, lon_s) as lon_b,
        if(searcher_is_a, reach_s, reach_h) as reach_a_nm, if(searcher_is_a, reach_h, reach_s) as reach_b_nm,
        if(searcher_is_a, ve_s, ve_h) as ve_a_kn, if(searcher_is_a, ve_h, ve_s) as ve_b_kn,
        if(searcher_is_a, vn_s, vn_h) as vn_a_kn, if(searcher_is_a, vn_h, vn_s) as vn_b_kn
    from found
),

-- b's offset from a between the two reports as sent (flat projection)
near as (
    select *, east_nm(lat_a, lon_a, lat_b, lon_b) as raw_east_nm, north_nm(lat_a, lat_b) as raw_north_nm
    from paired
),

offsets as (
    select
        *,
        greatest(ts_a, ts_b) as detected_at,
        ve_b_kn - ve_a_kn as rel_east_kn,
        vn_b_kn - vn_a_kn as rel_north_kn,
        -- hours each report is dead-reckoned forward to the later of the two report times
        date_diff('millisecond', ts_a, greatest(ts_a, ts_b)) / 3600000.0 as lead_a_h,
        date_diff('millisecond', ts_b, greatest(ts_a, ts_b)) / 3600000.0 as lead_b_h
    from near
    -- farther apart than both reaches: cannot meet (a shortcut only, never drops an encounter)
    where raw_east_nm * raw_east_nm + raw_north_nm * raw_north_nm <= pow(reach_a_nm + reach_b_nm, 2)
),

-- relative position of b from a at detected_at (both moved on along their course)
relative as (
    select
        *,
        raw_east_nm + ve_b_kn * lead_b_h - ve_a_kn * lead_a_h as east_nm,
        raw_north_nm + vn_b_kn * lead_b_h - vn_a_kn * lead_a_h as north_nm,
        rel_east_kn * rel_east_kn + rel_north_kn * rel_north_kn as rel_speed_sq
    from offsets
),

-- TCPA = -(d . v) / |v|^2 hours; vessels keeping station (no relative motion) are at CPA now
cpa as (
    select
        *,
        case when rel_speed_sq < 1e-12 then 0.0
             else -(east_nm * rel_east_kn + north_nm * rel_north_kn) / rel_speed_sq end as tcpa_h
    from relative
),

-- an encounter: CPA within the limit, reached between now and the horizon (the limits are
-- written out, not joined from settings: on millions of rows a join condition costs more)
encounter_cpas as (
    select
        *,
        sqrt(pow(east_nm + rel_east_kn * tcpa_h, 2) + pow(north_nm + rel_north_kn * tcpa_h, 2)) as cpa_nm
    from cpa
    where tcpa_h * 60.0 between 0 and cast($encounter_tcpa_minutes as double)
),

detections as (
    select
        c.*,
        c.tcpa_h * 60.0 as tcpa_minutes,
        c.detected_at + to_milliseconds(cast(round(c.tcpa_h * 3600000.0) as bigint)) as cpa_time,
        sqrt(c.east_nm * c.east_nm + c.north_nm * c.north_nm) as range_nm,
        s.bucket_minutes, s.tcpa_max_minutes,
        ra.r.sog_kn as sog_a_kn, ra.r.cog_deg as cog_a_deg, rb.r.sog_kn as sog_b_kn, rb.r.cog_deg as cog_b_deg,
        -- provenance: the two reports behind the detection
        ra.r.row_hash as hash_a, rb.r.row_hash as hash_b
    from encounter_cpas c
    cross join settings s
    join bucket_reports ra on ra.mmsi = c.mmsi_a and ra.bucket = c.bucket
    join bucket_reports rb on rb.mmsi = c.mmsi_b and rb.bucket = c.bucket
    where c.cpa_nm <= cast($encounter_cpa_nm as double)
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
        md5(hash_hex(c.hash_a) || ',' || hash_hex(c.hash_b)) as source_hash
    from classified c
)

select * from final
order by mmsi_a, mmsi_b, cpa_time
