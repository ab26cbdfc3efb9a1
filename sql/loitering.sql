-- Loitering (category: anomalies): a maximal run of consecutive reports of one vessel, each farther
-- than $port_radius_nm from every port (table ports) and with SOG <= $loiter_max_sog_kn (unknown
-- SOG: not loitering), lasting at least $loiter_min_minutes, whose reports all lie within
-- $loiter_radius_nm of the run's mean position.
-- Consecutive: by time, then row_hash. Output: mmsi, start, end (first and last report of the run,
-- UTC), center_lat, center_lon (mean position; longitude as a circular mean, so runs on +-180
-- work), max_radius_nm (farthest report from the centre), n_reports, minutes, mean_sog_kn.
-- Units: nm, knots, minutes. Port proximity is an equi-join on a grid of cells as large as the
-- port radius (each port listed in every cell its radius meets), not positions x ports.
with settings as (
    select
        cast($port_radius_nm as double) as port_radius_nm,
        cast($port_radius_nm as double) / 60.0 as band_deg
),

-- slow: SOG known and at most the loiter speed
slow as (
    select p.lat, p.lon, p.row_hash, cast(floor(p.lat / s.band_deg) as bigint) as band
    from stg_ais_positions p, settings s
    where p.sog_kn <= cast($loiter_max_sog_kn as double)
),

slow_cells as (
    select *, grid_lon_cell(lon, grid_lon_cells(band, band_deg, port_radius_nm)) as lon_cell
    from slow, settings
),

-- each port in every grid cell its radius meets
port_bands as (
    select p.locode, p.lat as port_lat, p.lon as port_lon, s.*,
           unnest(range(cast(floor((p.lat - s.band_deg) / s.band_deg) as bigint),
                        cast(floor((p.lat + s.band_deg) / s.band_deg) as bigint) + 1)) as band
    from ports p, settings s
),

port_cells as (
    select locode, port_lat, port_lon, port_radius_nm, band, wrap_cell(k, n_cells) as lon_cell
    from (
        select
            *,
            unnest(grid_lon_cell_span(port_lon, box_lon_deg(port_lat, port_radius_nm, band_deg), n_cells)) as k
        from (select *, grid_lon_cells(band, band_deg, port_radius_nm) as n_cells from port_bands)
    )
),

-- slow reports within the port radius of some port: never loitering
near_port as (
    select distinct s.row_hash
    from slow_cells s
    join port_cells p using (band, lon_cell)
    where haversine_nm(p.port_lat, p.port_lon, s.lat, s.lon) <= p.port_radius_nm
),

-- every report: slow (SOG known, at most the loiter speed) and clear of every port?
marked as materialized (
    select
        p.mmsi, p.ts, p.lat, p.lon, p.sog_kn, p.row_hash,
        coalesce(p.sog_kn <= cast($loiter_max_sog_kn as double), false) and n.row_hash is null as is_ok
    from stg_ais_positions p
    left join near_port n using (row_hash)
),

-- a run: consecutive loiter-ok reports share the count of other reports before them
runs as materialized (
    select * from (
        select
            m.*,
            sum(case when m.is_ok then 0 else 1 end) over (partition by m.mmsi order by m.ts, m.row_hash rows unbounded preceding) as run_no
        from marked m
        semi join (select distinct mmsi from marked where is_ok) v using (mmsi)
    )
    where is_ok
),

-- long enough, and not wider than the loiter circle (a cheap bound before exact distances);
-- mean longitude as a circular mean, so runs on +-180 average right
candidate_runs as (
    select
        mmsi,
        run_no,
        min(ts) as start,
        max(ts) as "end",
        count(*) as n_reports,
        avg(lat) as center_lat,
        degrees(atan2(avg(sin(radians(lon))), avg(cos(radians(lon))))) as center_lon,
        avg(sog_kn) as mean_sog_kn
    from runs
    group by mmsi, run_no
    having date_diff('second', min(ts), max(ts)) >= cast($loiter_min_minutes as double) * 60
       and (max(lat) - min(lat)) * 60.0 <= 2.1 * cast($loiter_radius_nm as double)
),

spread as (
    select c.*, max(haversine_nm(c.center_lat, c.center_lon, r.lat, r.lon)) as max_radius_nm
    from candidate_runs c
    join runs r on r.mmsi = c.mmsi and r.run_no = c.run_no
    group by all
),

-- compact: every report within the loiter radius of the mean position
loiters as (
    select * from spread where max_radius_nm <= cast($loiter_radius_nm as double)
),

-- provenance: md5 of the run's row hashes in time order
hashes as (
    select r.mmsi, r.run_no, md5(string_agg(hash_hex(r.row_hash), ',' order by r.ts, r.row_hash)) as source_hash
    from runs r
    semi join loiters l using (mmsi, run_no)
    group by r.mmsi, r.run_no
),

final as (
    select
        l.mmsi, l.start, l."end", l.center_lat, l.center_lon, l.max_radius_nm, l.n_reports,
        date_diff('second', l.start, l."end") / 60.0 as minutes,
        l.mean_sog_kn,
        h.source_hash
    from loiters l
    join hashes h using (mmsi, run_no)
)

select * from final
order by mmsi, start
