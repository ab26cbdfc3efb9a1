-- The staged positions: typed rows (typed_ais, sql/stg_typed.sql) that passed the row rules and
-- that the track rules (stg_track_rejects, sql/stg_track_rejects.sql) did not reject.
-- Column units are in tasks/stage.py STAGED_COLUMNS (written as column comments).
with typed as (
    select rowid + 1 as source_row, * exclude (invalid_reason, raw_payload)
    from typed_ais
    where invalid_reason is null
),

final as (
    select * from typed anti join stg_track_rejects using (source_row)
)

select * from final
