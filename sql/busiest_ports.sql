-- Busiest ports: per port and UTC day, the number of distinct vessels with a port call overlapping
-- the day (table fact_port_calls, the output of sql/port_calls.sql; a call over midnight counts on
-- both days), ranked within the day (rank 1 = most vessels; ties share a rank).
-- Also: calls overlapping the day, and vessel-minutes in port inside the day (call time clipped to it).
-- No params. Category: traffic patterns (busiest ports) / port & area activity.
with calls as (
    select mmsi, locode, port_name, arrival, departure from fact_port_calls
),

call_days as (
    select
        *,
        unnest(generate_series(cast(cast(arrival as date) as timestamp), cast(cast(departure as date) as timestamp), interval 1 day)) as day_start
    from calls
),

per_day as (
    select
        cast(day_start as date) as day,
        locode,
        any_value(port_name) as port_name,
        count(distinct mmsi) as vessels,
        count(*) as calls,
        sum(date_diff('second', greatest(arrival, day_start), least(departure, day_start + interval 1 day)) / 60.0) as vessel_minutes
    from call_days
    group by day_start, locode
),

final as (
    select
        day, locode, port_name, vessels, calls, vessel_minutes,
        rank() over (partition by day order by vessels desc) as rank
    from per_day
)

select * from final
order by day, rank, locode
