"""The small example corpus the project writes itself: maritime operations procedures and rules.

Three Markdown files, one plain-text file and one PDF (written with matplotlib's PDF backend),
with numbered sections, definitions, numeric limits, exceptions left to someone's judgement and
regulation references (33 CFR, SOLAS, MARPOL). The rules are written for this corpus in the
style of company procedures; the regulation numbers they cite are real parts and regulations.

Writing is idempotent: a file is rewritten only when its bytes would change (the PDF carries no
creation date), so a refresh over the built-in corpus re-chunks nothing.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

ANCHORING_MD = """\
# Anchoring Procedures

## 1 Scope

These procedures apply to every vessel of the fleet when anchoring in an open roadstead or a
designated anchorage. They supplement the master's standing orders and the anchorage
regulations of 33 CFR 110.

## 2 Definitions

**Anchor watch** means the continuous watch kept on the bridge while the vessel lies at anchor.

**Swinging circle** means the circle the vessel can sweep around its anchor, with a radius equal
to the length of cable paid out plus the length overall of the vessel.

**Dragging** means the anchor moving over the seabed so that the vessel leaves its swinging circle.

## 3 Anchoring

### 3.1 Choice of anchorage

The charted depth at the anchor position shall be at least 1.5 times the maximum draught. The
swinging circle shall be clear of other anchored vessels by not less than 0.2 nautical miles. An
anchorage designated under 33 CFR 110 shall be used where one exists.

### 3.2 Anchor watch

The officer of the watch shall be on the bridge at all times while the vessel is at anchor. The
anchor position shall be checked at intervals of not more than 15 minutes. The drag alarm of the
radar or ECDIS shall be set with a radius of not more than 0.1 nautical miles beyond the swinging
circle.

### 3.3 Weather limits

The mean wind speed at anchor shall be not more than 35 knots; above it the vessel shall weigh
anchor and proceed to sea, except where the master judges that remaining at anchor is safer. The
main engine shall be kept at not more than 10 minutes notice when the forecast wind exceeds
25 knots.

## 4 Reporting

The anchoring position shall be reported to the Vessel Traffic Service within 15 minutes of
letting go the anchor. Every anchoring shall be recorded in the deck log as required by SOLAS V/28.
"""

COLLISION_MD = """\
# Collision Avoidance Standing Orders

## 1 General

These standing orders apply the Inland Navigation Rules of 33 CFR 83 and the COLREGs on every
watch. The officer of the watch keeps a proper lookout by sight, hearing and radar at all times.

## 2 Safe speed

Every vessel shall proceed at a safe speed as required by 33 CFR 83.06. When visibility is
reduced, the speed through the water shall be not more than 12 knots, unless the master orders a
different speed after assessing the traffic and the state of the sea.

## 3 Risk of collision

### 3.1 Closest point of approach

Risk of collision is assessed as required by 33 CFR 83.07. The closest point of approach to
another vessel shall be at least 1.0 nautical miles in open waters. Inside a traffic separation
scheme the closest point of approach shall be at least 0.5 nautical miles.

### 3.2 Calling the master

The officer of the watch shall call the master when another vessel is expected to pass closer
than 1.0 nautical miles, unless the master has given written orders for that passage. A course alteration for collision avoidance shall be at least 30 degrees so
that it is readily apparent on radar.

## 4 Restricted visibility

In restricted visibility the conduct of vessels follows 33 CFR 83.19. Both radars shall be in use
and an additional lookout shall be posted. The fog signal shall be sounded at intervals of not
more than 2 minutes, as required by 33 CFR 83.35.

## 5 Definitions

**Restricted visibility** means any condition in which visibility is restricted by fog, mist,
falling snow, heavy rainstorms, sandstorms or any other similar causes.

**Safe speed** means a speed at which the vessel can take proper and effective action to avoid
collision and be stopped within a distance appropriate to the prevailing circumstances.
"""

AIS_MD = """\
# AIS and Reporting Procedures

## 1 Carriage

Every vessel of 300 gross tonnage and upwards on international voyages shall carry an automatic
identification system as required by SOLAS V/19. The AIS shall be kept in operation at all
times, except where the master considers that its operation compromises the safety or security
of the vessel.

## 2 Voyage data

### 2.1 Draught and destination

The draught entered in the AIS shall be updated within 30 minutes of departure. The destination
and the estimated time of arrival shall be entered before the vessel leaves the berth.

### 2.2 Navigational status

The navigational status shall be changed within 5 minutes of anchoring, mooring or getting
underway.

## 3 Reporting intervals

The reporting interval of a vessel at anchor shall be not more than 3 minutes. At speeds between
14 and 23 knots the reporting interval shall be not more than 6 seconds.

## 4 Long-range identification

Long-range identification and tracking position reports shall be sent at intervals of not more
than 6 hours, as required by SOLAS V/19-1.

## 5 Definitions

**Static data** means the vessel's MMSI, name, call sign, IMO number, type, length and beam.

**Voyage data** means the draught, destination, estimated time of arrival and navigational status.
"""

BUNKERING_TXT = """\
BUNKERING OPERATIONS PROCEDURE

1 PURPOSE
This procedure sets the steps for receiving fuel oil from a bunker tanker. It applies
33 CFR 156.120 and 33 CFR 156.150 together with MARPOL Annex I.

2 DEFINITIONS
"Bunker tanker" means the barge or vessel that delivers the fuel oil.
"Person in charge" means the officer designated by the master to supervise the transfer.

3 BEFORE TRANSFER

3.1 Declaration of inspection
A declaration of inspection shall be completed and signed by both persons in charge before the
transfer starts, as required by 33 CFR 156.150.

3.2 Tank levels
The level of each receiving tank shall be not more than 90 per cent of its capacity at the end
of the transfer. Every receiving tank shall be sounded before the transfer starts.

3.3 Communication
A radio check on the agreed VHF working channel shall be made not more than 15 minutes before
the transfer starts. The emergency stop signal shall be agreed with the bunker tanker.

4 DURING TRANSFER

4.1 Pumping rate
The initial pumping rate shall be not more than 100 cubic metres per hour until the person in
charge confirms that fuel is entering the correct tank. The pumping rate shall never be more
than the agreed maximum of 400 cubic metres per hour. Soundings shall be taken at intervals of
not more than 30 minutes.

4.2 Stopping the transfer
The transfer shall stop at once if a leak is found, unless stopping would cause a greater hazard
in the judgement of the person in charge.

5 AFTER TRANSFER
The bunker delivery note shall be kept on board for at least 3 years, as required by
MARPOL Annex VI/18.
"""

PORT_ENTRY_LINES = """\
PORT ENTRY AND PILOTAGE

1 PILOT BOARDING

1.1 Boarding speed
The speed when embarking or disembarking the pilot shall be not more than 8 knots. The pilot
ladder shall be rigged as required by SOLAS V/23.

1.2 Pilot ladder
The climb to the deck shall be at least 1.5 metres and not more than 9 metres; a combination
arrangement shall be rigged for a greater climb, as required by SOLAS V/23.

2 HARBOUR SPEED
The speed inside the breakwater shall be not more than 6 knots, except where the harbour master
directs a higher speed for safe handling.

3 UNDER-KEEL CLEARANCE
The under-keel clearance in the approach channel shall be at least 10 per cent of the draught.

4 VTS REPORTING
The vessel shall report to the Vessel Traffic Service at least 30 minutes before entering the
VTS area, as required by 33 CFR 161.18. The report is made on VHF channel 14.

5 DEFINITIONS
"Under-keel clearance" means the vertical distance between the keel and the seabed.
"""

MARKDOWN_AND_TEXT = {
    "anchoring.md": ANCHORING_MD,
    "collision_avoidance.md": COLLISION_MD,
    "ais_reporting.md": AIS_MD,
    "bunkering.txt": BUNKERING_TXT,
}
PDF_NAME = "port_entry.pdf"


def pdf_bytes(text: str) -> bytes:
    """A text as an A4 PDF, one line of text per line (wrapped at 100 characters); no creation date,
    so the same text gives the same bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    lines: list[str] = []
    for line in text.splitlines():
        lines += textwrap.wrap(line, 100) or [""]
    per_page = 52
    buf = io.BytesIO()
    with PdfPages(buf, metadata={"CreationDate": None, "Creator": "tidewright", "Producer": "tidewright"}) as pdf:
        for first in range(0, len(lines), per_page):
            fig = plt.figure(figsize=(8.27, 11.69))
            for i, line in enumerate(lines[first:first + per_page]):
                if line:
                    fig.text(0.08, 0.95 - i * 0.017, line, fontsize=9, family="DejaVu Sans")
            pdf.savefig(fig)
            plt.close(fig)
    return buf.getvalue()


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def write_example_corpus(folder: Path) -> list[Path]:
    """The built-in corpus into folder (files whose bytes would not change are left alone)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in MARKDOWN_AND_TEXT.items():
        _write_if_changed(folder / name, text.encode("utf-8"))
        paths.append(folder / name)
    _write_if_changed(folder / PDF_NAME, pdf_bytes(PORT_ENTRY_LINES))
    paths.append(folder / PDF_NAME)
    return sorted(paths)
