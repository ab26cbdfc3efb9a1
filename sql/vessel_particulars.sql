-- Vessel identity & particulars, one row per MMSI (category: vessel identity & particulars).
-- Static fields are what the vessel broadcast most often (ties: the value broadcast latest); the flag state
-- is the MID's (first three digits of the MMSI) in table mid_flags; the type name is the range's
-- in table vessel_type_max_speed. Identity changes (more than one name / IMO / call sign, or an
-- identity conflict in fact_identity_conflicts) are counted, not hidden.
-- Units: length/width/draught metres. No parameters.
with positions as (
    select mmsi, ts, vessel_name, imo, call_sign, vessel_type, length_m, width_m, draft_m,
           transceiver_class, destination, row_hash
    from stg_ais_positions
),

-- how often, and how late, the vessel broadcast each combination of static fields (few per vessel)
static_combos as (
    select mmsi, vessel_name, imo, call_sign, vessel_type, length_m, width_m, transceiver_class,
           count(*) as n, max(ts) as last_ts
    from positions
    group by all
),

-- the vessel_name broadcast most often (ties: the one broadcast latest); NULL only when never broadcast
mode_vessel_name as (
    select mmsi, arg_max(vessel_name, (n, last_ts)) as vessel_name
    from (select mmsi, vessel_name, sum(n) as n, max(last_ts) as last_ts from static_combos where vessel_name is not null group by all)
    group by mmsi
),

-- the imo broadcast most often (ties: the one broadcast latest); NULL only when never broadcast
mode_imo as (
    select mmsi, arg_max(imo, (n, last_ts)) as imo
    from (select mmsi, imo, sum(n) as n, max(last_ts) as last_ts from static_combos where imo is not null group by all)
    group by mmsi
),

-- the call_sign broadcast most often (ties: the one broadcast latest); NULL only when never broadcast
mode_call_sign as (
    select mmsi, arg_max(call_sign, (n, last_ts)) as call_sign
    from (select mmsi, call_sign, sum(n) as n, max(last_ts) as last_ts from static_combos where call_sign is not null group by all)
    group by mmsi
),

-- the vessel_type broadcast most often (ties: the one broadcast latest); NULL only when never broadcast
mode_vessel_type as (
    select mmsi, arg_max(vessel_type, (n, last_ts)) as vessel_type
    from (select mmsi, vessel_type, sum(n) as n, max(last_ts) as last_ts from static_combos where vessel_type is not null group by all)
    group by mmsi
),

-- the length_m broadcast most often (ties: the one broadcast latest); NULL only when never broadcast
mode_length_m as (
    select mmsi, arg_max(length_m, (n, last_ts)) as length_m
    from (select mmsi, length_m, sum(n) as n, max(last_ts) as last_ts from static_combos where length_m is not null group by all)
    group by mmsi
),

-- the width_m broadcast most often (ties: the one broadcast latest); NULL only when never broadcast
mode_width_m as (
    select mmsi, arg_max(width_m, (n, last_ts)) as width_m
    from (select mmsi, width_m, sum(n) as n, max(last_ts) as last_ts from static_combos where width_m is not null group by all)
    group by mmsi
),

-- the transceiver_class broadcast most often (ties: the one broadcast latest); NULL only when never broadcast
mode_transceiver_class as (
    select mmsi, arg_max(transceiver_class, (n, last_ts)) as transceiver_class
    from (select mmsi, transceiver_class, sum(n) as n, max(last_ts) as last_ts from static_combos where transceiver_class is not null group by all)
    group by mmsi
),

per_vessel as (
    select
        mmsi,
        max(draft_m) as max_draft_m,
        arg_max(destination, ts) filter (where destination is not null) as last_destination,
        count(*) as n_positions,
        min(ts) as first_seen,
        max(ts) as last_seen,
        row_hash_xor(row_hash) as source_hash
    from positions
    group by mmsi
),

identity_counts as (
    select mmsi, count(distinct vessel_name) as n_names, count(distinct imo) as n_imos, count(distinct call_sign) as n_call_signs
    from static_combos
    group by mmsi
),

final as (
    select
        v.mmsi,
        cast(v.mmsi // 1000000 as integer) as mid,
        f.flag_country,
        f.flag_iso2,
        m1.vessel_name, m2.imo, m3.call_sign, m4.vessel_type,
        t.type_name as vessel_type_name,
        m5.length_m, m6.width_m, v.max_draft_m, m7.transceiver_class, v.last_destination,
        i.n_names, i.n_imos, i.n_call_signs,
        coalesce(c.identity_conflicts, 0) as identity_conflicts,
        v.n_positions, v.first_seen, v.last_seen, v.source_hash
    from per_vessel v
    join identity_counts i using (mmsi)
    left join mode_vessel_name m1 using (mmsi)
    left join mode_imo m2 using (mmsi)
    left join mode_call_sign m3 using (mmsi)
    left join mode_vessel_type m4 using (mmsi)
    left join mode_length_m m5 using (mmsi)
    left join mode_width_m m6 using (mmsi)
    left join mode_transceiver_class m7 using (mmsi)
    left join mid_flags f on f.mid = v.mmsi // 1000000
    left join vessel_type_max_speed t on m4.vessel_type between t.type_from and t.type_to
    left join (select mmsi, count(*) as identity_conflicts from fact_identity_conflicts group by mmsi) c using (mmsi)
)

select * from final
order by mmsi
