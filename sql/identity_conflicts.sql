-- Identity conflicts (category: vessel identity; anomalies): one MMSI broadcast by two transmitters
-- at once, seen as the MMSI's reports alternating between two places no vessel can travel between.
-- Reads kept and flagged reports (stg_ais_positions UNION ALL stg_flagged_positions): staging sends
-- most of a twin's reports, and the real vessel's between them, to stg_flagged_positions.
-- Params: $identity_max_speed_kn (a step between consecutive reports needing more than this is a
-- switch of transmitter), $identity_min_separation_nm (and the two places are at least this far
-- apart, so GPS noise over a second never counts), $identity_gap_minutes (switches further apart
-- than this start a new episode), $identity_min_reports (fewest reports from the second transmitter).
-- Output: one row per episode: mmsi, start / end (first and last report of the second transmitter,
-- UTC), lat_a/lon_a (the vessel's last report before the episode), lat_b/lon_b (the second
-- transmitter's first report), separation_nm between them, n_reports (both transmitters, start..end).
-- Units: nm, knots, minutes.
with reports as (
    select mmsi, ts, lat, lon, row_hash from stg_ais_positions
    union all
    select mmsi, ts, lat, lon, row_hash from stg_flagged_positions
    where reject_reason in ('impossible_jump', 'conflicting_position')
),

-- a switch: a step no vessel can make (macro impossible_step: at least the minimum separation at
-- more than the maximum speed); only MMSIs that switch back and forth (a lone position spike
-- switches twice) go further
suspects as (
    select mmsi
    from (
        select
            mmsi,
            -- a step shorter than R * (|dlat| + |dlon|) radians (a bound on the great circle, with 1 %
            -- to spare for rounding) below the separation is no switch: the exact test runs on the rest
            case
                when 3440.065 * 1.01 * radians(abs(lat - prev_lat) + abs(lon_delta_deg(prev_lon, lon)))
                     < cast($identity_min_separation_nm as double) then false
                else impossible_step(prev_ts, prev_lat, prev_lon, ts, lat, lon,
                                     cast($identity_min_separation_nm as double), cast($identity_max_speed_kn as double))
            end as is_switch
        from (
            select mmsi, ts, lat, lon, lag(ts) over track as prev_ts, lag(lat) over track as prev_lat, lag(lon) over track as prev_lon
            from reports
            window track as (partition by mmsi order by ts, row_hash)
        )
    )
    group by mmsi
    having count(*) filter (where is_switch) >= 3
),

switches as (
    select
        *,
        impossible_step(prev_ts, prev_lat, prev_lon, ts, lat, lon,
                        cast($identity_min_separation_nm as double), cast($identity_max_speed_kn as double)) as is_switch,
        haversine_nm(prev_lat, prev_lon, lat, lon) as step_nm
    from (
        select
            r.*,
            lag(ts) over track as prev_ts,
            lag(lat) over track as prev_lat,
            lag(lon) over track as prev_lon
        from reports r
        semi join suspects using (mmsi)
        window track as (partition by mmsi order by ts, row_hash)
    )
),

-- transmitter parity: every switch hands the track to the other transmitter
labelled as (
    select
        s.*,
        sum(case when is_switch then 1 else 0 end) over track % 2 as parity
    from switches s
    window track as (partition by mmsi order by ts, row_hash rows unbounded preceding)
),

-- an episode starts at a switch more than $identity_gap_minutes after the previous switch
episode_starts as (
    select
        *,
        is_switch and coalesce(
            date_diff('second', lag(ts) over switch_time, ts) > cast($identity_gap_minutes as double) * 60,
            true) as starts_episode
    from labelled
    where is_switch
    window switch_time as (partition by mmsi order by ts, row_hash)
),

-- each report belongs to the latest episode started at or before it (0: before any episode)
numbered as (
    select
        l.*,
        coalesce(e.starts_episode, false) as starts_episode,
        sum(case when e.starts_episode then 1 else 0 end) over track as episode
    from labelled l
    left join episode_starts e using (mmsi, ts, row_hash)
    window track as (partition by mmsi order by ts, row_hash rows unbounded preceding)
),

-- the report before an episode's first switch is the vessel's own transmitter ("a")
episodes as (
    select
        mmsi,
        episode,
        arg_min(prev_lat, (ts, row_hash)) filter (where starts_episode) as lat_a,
        arg_min(prev_lon, (ts, row_hash)) filter (where starts_episode) as lon_a,
        arg_min(lat, (ts, row_hash)) filter (where starts_episode) as lat_b,
        arg_min(lon, (ts, row_hash)) filter (where starts_episode) as lon_b,
        arg_min(step_nm, (ts, row_hash)) filter (where starts_episode) as separation_nm,
        -- parity of the vessel's own transmitter: the first switch flipped it
        1 - arg_min(parity, (ts, row_hash)) filter (where starts_episode) as own_parity,
        count(*) filter (where is_switch) as n_switches
    from numbered
    where episode > 0
    group by mmsi, episode
),

spans as (
    select
        e.*,
        min(n.ts) filter (where n.parity <> e.own_parity) as start,
        max(n.ts) filter (where n.parity <> e.own_parity) as "end",
        count(*) filter (where n.parity <> e.own_parity) as n_reports_b
    from episodes e
    join numbered n using (mmsi, episode)
    group by all
),

counted as (
    select s.*, count(*) as n_reports
    from spans s
    join numbered n on n.mmsi = s.mmsi and n.ts between s.start and s."end"
    group by all
),

final as (
    select
        mmsi, start, "end", lat_a, lon_a, lat_b, lon_b, n_reports, n_reports_b, separation_nm,
        date_diff('second', start, "end") / 60.0 as minutes
    from counted
    -- a conflict: the second transmitter was heard enough times and both took turns (A B A B at least)
    where n_reports_b >= cast($identity_min_reports as integer) and n_switches >= 3
)

select * from final
order by mmsi, start
