-- Implausible speeds for the vessel type (category: anomalies & data quality): episodes of
-- consecutive reports of one vessel whose SOG exceeds the plausible maximum for its AIS ship-type
-- code (table vessel_type_max_speed: type_from, type_to, type_name, max_sog_kn; loaded from
-- tasks/data/vessel_type_max_speed.csv by tasks/anomalies.py load_reference_tables).
-- Reports that cannot say (SOG not available, or a type code with no listed maximum) are skipped:
-- they neither flag nor break an episode. No params.
-- Output: mmsi, vessel_type_code, type_name, start, end (first and last flagged report, UTC),
-- max_sog_kn, limit_kn, n_reports. Units: knots.
with positions as (
    select mmsi, ts, sog_kn, vessel_type, row_hash
    from stg_ais_positions
    where sog_kn is not null and vessel_type is not null
),

-- one row per type code (ranges expanded) so reports join on equality
limits as (
    select unnest(range(type_from, type_to + 1)) as vessel_type, type_name, max_sog_kn as limit_kn
    from vessel_type_max_speed
),

checked as (
    select p.*, l.type_name, l.limit_kn, p.sog_kn > l.limit_kn as too_fast
    from positions p
    join limits l using (vessel_type)
),

-- only vessels with at least one implausible report need their track walked
suspects as (
    select distinct mmsi from checked where too_fast
),

-- an episode: consecutive too-fast reports share the count of plausible reports before them
episodes as (
    select
        c.*,
        sum(case when too_fast then 0 else 1 end) over (partition by mmsi order by ts, row_hash rows unbounded preceding) as episode
    from checked c
    semi join suspects using (mmsi)
),

final as (
    select
        mmsi,
        arg_min(vessel_type, (ts, row_hash)) as vessel_type_code,
        arg_min(type_name, (ts, row_hash)) as type_name,
        min(ts) as start,
        max(ts) as "end",
        max(sog_kn) as max_sog_kn,
        arg_min(limit_kn, (ts, row_hash)) as limit_kn,
        count(*) as n_reports,
        md5(string_agg(hash_hex(row_hash), ',' order by ts, row_hash)) as source_hash
    from episodes
    where too_fast
    group by mmsi, episode
)

select * from final
order by mmsi, start
