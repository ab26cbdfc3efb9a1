-- Geometry macros for the anomaly and close-encounter queries. Load after sql/macros.sql (they use
-- its haversine_nm).
-- Angles in degrees, distances in nautical miles on the same sphere as haversine_nm (R = 3440.065 nm).
-- Longitude difference lon2 - lon1 folded into [-180, 180): the short way round, also across +-180.
create or replace temp macro lon_delta_deg(lon1, lon2) as
    ((lon2 - lon1 + 540.0) % 360.0) - 180.0;

-- Local flat (equirectangular) offsets from point 1 to point 2, nm east and nm north; accurate to
-- well under 1 % over the tens of miles the encounter and loitering rules look at.
create or replace temp macro east_nm(lat1, lon1, lat2, lon2) as
    radians(lon_delta_deg(lon1, lon2)) * 3440.065 * cos(radians((lat1 + lat2) / 2));

create or replace temp macro north_nm(lat1, lat2) as
    radians(lat2 - lat1) * 3440.065;

-- Direction of an east/north offset (or velocity), degrees true in [0, 360).
create or replace temp macro direction_deg(east, north) as
    (degrees(atan2(east, north)) + 360.0) % 360.0;

-- Smallest angle between two directions given in [0, 360], degrees in [0, 180].
create or replace temp macro angle_between_deg(a, b) as
    180.0 - abs(180.0 - ((b - a + 720.0) % 360.0));

-- Velocity components in knots from SOG (knots) and COG (degrees true).
create or replace temp macro east_kn(sog, cog) as sog * sin(radians(cog));
create or replace temp macro north_kn(sog, cog) as sog * cos(radians(cog));

-- Spatial grid for neighbour searches: latitude bands band_deg high; each band holds as many
-- longitude cells as fit with every cell at least reach_nm wide at the band's poleward edge
-- (1 degree of longitude = 60 nm * cos(latitude); 60 nm per degree errs on the wide side).
create or replace temp macro grid_lon_cells(band, band_deg, reach_nm) as
    cast(greatest(1, floor(360.0 / (reach_nm / (60.0 * cos(radians(least(89.99,
        greatest(abs(band * band_deg), abs((band + 1) * band_deg))))))))) as bigint);

-- Longitude cell of a position in a band with n_cells cells; cell indices wrap at +-180.
create or replace temp macro grid_lon_cell(lon, n_cells) as
    cast(floor((lon + 180.0) / (360.0 / n_cells)) as bigint) % n_cells;

-- Longitude half-width (degrees) of a box half_nm wide around a position at latitude lat, sized
-- for latitudes up to margin_deg further poleward (+1 % for the sphere); 360 near the poles.
create or replace temp macro box_lon_deg(lat, half_nm, margin_deg) as
    case when abs(lat) + margin_deg >= 89.99 then 360.0
         else least(360.0, 1.01 * half_nm / (60.0 * cos(radians(abs(lat) + margin_deg)))) end;

-- Unwrapped longitude cell numbers of a band with n_cells cells that meet [lon - half_deg,
-- lon + half_deg] (every cell when the span goes all the way round); fold each with wrap_cell.
create or replace temp macro grid_lon_cell_span(lon, half_deg, n_cells) as
    case
        when floor((lon + half_deg + 180.0) / (360.0 / n_cells)) - floor((lon - half_deg + 180.0) / (360.0 / n_cells)) + 1 >= n_cells
            then range(0, n_cells)
        else range(cast(floor((lon - half_deg + 180.0) / (360.0 / n_cells)) as bigint),
                   cast(floor((lon + half_deg + 180.0) / (360.0 / n_cells)) as bigint) + 1)
    end;

-- A cell number folded into 0 .. n_cells - 1 (cells past +180 continue from -180).
create or replace temp macro wrap_cell(k, n_cells) as ((k % n_cells) + n_cells) % n_cells;

-- One number for a grid cell (band, longitude cell), so a join matches cells on one key; unique
-- while a band holds fewer than 2^20 cells (grid_lon_cells stays far below that for cells wider
-- than 0.1 nm).
create or replace temp macro grid_cell_id(band, lon_cell) as band * 1048576 + lon_cell;

-- A step between two consecutive reports of one MMSI that no vessel can make: at least min_nm
-- apart and faster than max_kn (reports in the same second count as 1 s apart).
create or replace temp macro impossible_step(prev_ts, prev_lat, prev_lon, ts, lat, lon, min_nm, max_kn) as
    coalesce(
        haversine_nm(prev_lat, prev_lon, lat, lon) >= min_nm
        and haversine_nm(prev_lat, prev_lon, lat, lon) / greatest(date_diff('second', prev_ts, ts), 1) * 3600.0 > max_kn,
        false);
