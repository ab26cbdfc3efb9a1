-- Traffic: per hour (UTC), grid cell and AIS vessel-type code, the number of distinct vessels
-- reporting and their density (vessels per square nautical mile of the cell).
-- Cells: $cell_deg degrees; cell_lat_idx = floor(lat / $cell_deg), cell_lon_idx = floor(lon / $cell_deg).
-- Cell area on the sphere (R = 3440.065 nm, as haversine_nm): R^2 * dlon(rad) * (sin(lat_top) - sin(lat_bottom)).
-- Reports are the staged ones plus those staging flagged for track rules (stg_flagged_positions):
-- every position report received from a valid MMSI counts where it was sent from.
-- vessel_type_code NULL: the vessel sent no type (AIS code 0, not available).
-- Category: traffic patterns (counts and density by area, type and hour).
with received as (
    select mmsi, ts, lat, lon, vessel_type from stg_ais_positions
    union all
    select mmsi, ts, lat, lon, vessel_type from stg_flagged_positions
),

cells as (
    select
        mmsi,
        date_trunc('hour', ts) as hour,
        cast(floor(lat / cast($cell_deg as double)) as bigint) as cell_lat_idx,
        cast(floor(lon / cast($cell_deg as double)) as bigint) as cell_lon_idx,
        vessel_type as vessel_type_code
    from received
),

counts as (
    select hour, cell_lat_idx, cell_lon_idx, vessel_type_code, count(distinct mmsi) as vessels, count(*) as n_reports
    from cells
    group by hour, cell_lat_idx, cell_lon_idx, vessel_type_code
),

final as (
    select
        hour, cell_lat_idx, cell_lon_idx, vessel_type_code, vessels, n_reports,
        cell_lat_idx * cast($cell_deg as double) as cell_lat,
        cell_lon_idx * cast($cell_deg as double) as cell_lon,
        pow(3440.065, 2) * radians(cast($cell_deg as double))
            * abs(sin(radians((cell_lat_idx + 1) * cast($cell_deg as double))) - sin(radians(cell_lat_idx * cast($cell_deg as double))))
            as cell_area_nm2,
        vessels / (
            pow(3440.065, 2) * radians(cast($cell_deg as double))
            * abs(sin(radians((cell_lat_idx + 1) * cast($cell_deg as double))) - sin(radians(cell_lat_idx * cast($cell_deg as double))))
        ) as density_per_nm2
    from counts
)

select * from final
order by hour, cell_lat_idx, cell_lon_idx, vessel_type_code
