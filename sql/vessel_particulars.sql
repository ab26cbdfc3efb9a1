-- Vessel identity & particulars, one row per MMSI (category: vessel identity & particulars).
-- Static fields are what the vessel broadcast most often (ties: the later value); the flag state
-- is the MID's (first three digits of the MMSI) in table mid_flags; the type name is the range's
-- in table vessel_type_max_speed. Identity changes (more than one name / IMO / call sign, or an
-- identity conflict in fact_identity_conflicts) are counted, not hidden.
-- Units: length/width/draught metres. No parameters.
with positions as (
    select mmsi, ts, vessel_name, imo, call_sign, vessel_type, length_m, width_m, draft_m,
           transceiver_class, destination, row_hash
    from stg_ais_positions
),

per_vessel as (
    select
        mmsi,
        mode(vessel_name order by ts desc) as vessel_name,
        mode(imo order by ts desc) as imo,
        mode(call_sign order by ts desc) as call_sign,
        mode(vessel_type order by ts desc) as vessel_type,
        mode(length_m order by ts desc) as length_m,
        mode(width_m order by ts desc) as width_m,
        max(draft_m) as max_draft_m,
        mode(transceiver_class order by ts desc) as transceiver_class,
        arg_max(destination, ts) filter (where destination is not null) as last_destination,
        count(distinct vessel_name) as n_names,
        count(distinct imo) as n_imos,
        count(distinct call_sign) as n_call_signs,
        count(*) as n_positions,
        min(ts) as first_seen,
        max(ts) as last_seen,
        format('{:032x}', bit_xor(md5_number(row_hash))) as source_hash
    from positions
    group by mmsi
),

final as (
    select
        v.mmsi,
        cast(v.mmsi // 1000000 as integer) as mid,
        f.flag_country,
        f.flag_iso2,
        v.vessel_name, v.imo, v.call_sign, v.vessel_type,
        t.type_name as vessel_type_name,
        v.length_m, v.width_m, v.max_draft_m, v.transceiver_class, v.last_destination,
        v.n_names, v.n_imos, v.n_call_signs,
        coalesce(c.identity_conflicts, 0) as identity_conflicts,
        v.n_positions, v.first_seen, v.last_seen, v.source_hash
    from per_vessel v
    left join mid_flags f on f.mid = v.mmsi // 1000000
    left join vessel_type_max_speed t on v.vessel_type between t.type_from and t.type_to
    left join (select mmsi, count(*) as identity_conflicts from fact_identity_conflicts group by mmsi) c using (mmsi)
)

select * from final
order by mmsi
