-- The track rules over the typed rows that passed the row rules (table typed_ais, written by
-- sql/stg_typed.sql; its row number, rowid + 1, is source_row). Returns only the rows the rules
-- reject: source_row and reject_reason. Every other valid row is staged.
-- Exact duplicates and conflicts both need two rows of one vessel at one second, so only those
-- (few) rows are examined for them; the jump rule reads every row once, in track order.
-- Param: $max_implied_speed_kn (a report that needs more than this from both neighbours is a jump).
with same_second as (
    select mmsi, ts
    from typed_ais
    where invalid_reason is null
    group by mmsi, ts
    having count(*) > 1
),

crowded as (
    select rowid + 1 as source_row, mmsi, ts, lat, lon, row_hash
    from typed_ais
    semi join same_second using (mmsi, ts)
    where invalid_reason is null
),

-- exact duplicates: every copy of a raw row but one (copies are identical, so which one stays
-- does not change what is staged)
duplicates as (
    select source_row
    from crowded
    qualify row_number() over (partition by row_hash order by source_row) > 1
),

-- one vessel reported at two places at the same second: no way to tell which is true
conflicts as (
    select mmsi, ts
    from crowded
    anti join duplicates using (source_row)
    group by mmsi, ts
    having count(distinct (lat, lon)) > 1
),

conflicting as (
    select source_row
    from crowded
    anti join duplicates using (source_row)
    semi join conflicts using (mmsi, ts)
),

neighbours as (
    select
        source_row,
        haversine_nm(lag(lat) over track, lag(lon) over track, lat, lon)
            / greatest(date_diff('second', lag(ts) over track, ts), 1) * 3600 as knots_from_previous,
        haversine_nm(lat, lon, lead(lat) over track, lead(lon) over track)
            / greatest(date_diff('second', ts, lead(ts) over track), 1) * 3600 as knots_to_next
    from (select rowid + 1 as source_row, mmsi, ts, lat, lon from typed_ais where invalid_reason is null) v
    anti join duplicates using (source_row)
    anti join conflicts using (mmsi, ts)
    -- rows of one vessel, second and place are interchangeable for this rule: the result does not
    -- depend on the order rows were read in
    window track as (partition by mmsi order by ts, lat, lon)
),

-- a spike: getting there from the previous report and on to the next both need an impossible speed
jumps as (
    select source_row
    from neighbours
    where knots_from_previous > cast($max_implied_speed_kn as double)
      and knots_to_next > cast($max_implied_speed_kn as double)
),

final as (
    select source_row, 'duplicate_row' as reject_reason from duplicates
    union all
    select source_row, 'conflicting_position' from conflicting
    union all
    select source_row, 'impossible_jump' from jumps
)

select * from final
