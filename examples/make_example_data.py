"""python examples/make_example_data.py

Generate a small, fictional customer table at examples/data/customers.csv.

Every person, address and email in the file is made up. The columns are linked
so a model has real structure to learn: city decides state and zip prefix,
age shapes the plan choice, the plan sets the monthly spend and churn rate,
the email is derived from the name, and active customers were last seen in
the final month while churned ones went quiet at any point after signing up.
A free-text note is usually empty and sometimes contains a comma or quotes,
so CSV quoting gets exercised.

The seed is fixed: each run rewrites the file byte for byte the same.
"""

import csv
import datetime
import random
from pathlib import Path

SEED = 20240601
ROW_COUNT = 5000
OUT_PATH = Path(__file__).resolve().parent / "data" / "customers.csv"

FIRST_NAMES = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Carlos",
    "Karen",
    "Daniel",
    "Lisa",
    "Matthew",
    "Nancy",
    "Anthony",
    "Sandra",
    "Mark",
    "Ashley",
    "Steven",
    "Emily",
    "Kevin",
    "Michelle",
    "Brian",
    "Amanda",
    "Jose",
    "Melissa",
    "Wei",
    "Priya",
    "Omar",
    "Sofia",
]
LAST_NAMES = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Nguyen",
    "Hill",
    "Patel",
    "Chen",
]
# (city, state, zip prefix): real city/state pairs; the zip suffix is random.
CITIES = [
    ("New York", "NY", "100"),
    ("Los Angeles", "CA", "900"),
    ("Chicago", "IL", "606"),
    ("Houston", "TX", "770"),
    ("Phoenix", "AZ", "850"),
    ("Philadelphia", "PA", "191"),
    ("San Antonio", "TX", "782"),
    ("San Diego", "CA", "921"),
    ("Dallas", "TX", "752"),
    ("San Jose", "CA", "951"),
    ("Austin", "TX", "787"),
    ("Jacksonville", "FL", "322"),
    ("Columbus", "OH", "432"),
    ("Charlotte", "NC", "282"),
    ("Indianapolis", "IN", "462"),
    ("Seattle", "WA", "981"),
    ("Denver", "CO", "802"),
    ("Boston", "MA", "021"),
    ("Nashville", "TN", "372"),
    ("Portland", "OR", "972"),
    ("Las Vegas", "NV", "891"),
    ("Detroit", "MI", "482"),
    ("Atlanta", "GA", "303"),
    ("Miami", "FL", "331"),
    ("Minneapolis", "MN", "554"),
]
# Bigger cities get more customers.
CITY_WEIGHTS = [20, 14, 11, 9, 7, 6, 5, 5, 5, 4, 4, 4, 3, 3, 3, 4, 3, 3, 3, 3, 3, 2, 3, 3, 2]
STREET_NAMES = [
    "Maple",
    "Oak",
    "Pine",
    "Cedar",
    "Elm",
    "Washington",
    "Lake",
    "Hill",
    "Park",
    "Main",
    "Sunset",
    "River",
    "Highland",
    "Church",
    "Willow",
    "Lincoln",
]
STREET_TYPES = ["St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct"]
EMAIL_DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "proton.me"]
PLANS = ["basic", "plus", "premium"]
# (mean, standard deviation, floor) of monthly spend in dollars, per plan.
SPEND = {"basic": (19.0, 4.0, 9.99), "plus": (44.0, 8.0, 29.99), "premium": (96.0, 18.0, 59.99)}
CHURN_RATE = {"basic": 0.28, "plus": 0.15, "premium": 0.07}
NOTE_RATE = 0.12
NOTES = [
    "moved, new address",
    "called support twice",
    "prefers email contact",
    "referred by a friend",
    "billing issue, resolved",
    "asked about family plan",
    "paused, then resumed",
    "student discount",
    'said the app was "too slow"',
]
FIRST_SIGNUP = datetime.date(2019, 1, 1)
LAST_SIGNUP = datetime.date(2024, 12, 31)
HEADER = [
    "customer_id",
    "signup_date",
    "first_name",
    "last_name",
    "email",
    "age",
    "street",
    "city",
    "state",
    "zip",
    "plan",
    "monthly_spend",
    "churned",
    "last_active",
    "note",
]


def plan_weights(age):
    """Younger customers lean basic; older ones lean premium."""
    if age < 30:
        return [0.62, 0.30, 0.08]
    if age < 50:
        return [0.40, 0.38, 0.22]
    if age < 70:
        return [0.28, 0.37, 0.35]
    return [0.35, 0.40, 0.25]


def make_row(rng, index, signup_date):
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    email = f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@{rng.choice(EMAIL_DOMAINS)}"
    age = min(90, max(18, round(rng.gauss(42, 14))))
    city, state, zip_prefix = rng.choices(CITIES, weights=CITY_WEIGHTS)[0]
    street = f"{rng.randint(1, 9999)} {rng.choice(STREET_NAMES)} {rng.choice(STREET_TYPES)}"
    plan = rng.choices(PLANS, weights=plan_weights(age))[0]
    mean, spread, floor = SPEND[plan]
    spend = max(floor, rng.gauss(mean, spread))
    churned = "yes" if rng.random() < CHURN_RATE[plan] else "no"
    if churned == "yes":
        active_days = rng.randint(0, (LAST_SIGNUP - signup_date).days)
        last_active = signup_date + datetime.timedelta(days=active_days)
    else:
        last_active = max(signup_date, LAST_SIGNUP - datetime.timedelta(days=rng.randint(0, 30)))
    note = rng.choice(NOTES) if rng.random() < NOTE_RATE else ""
    return [
        f"C-{index:06d}",
        signup_date.isoformat(),
        first,
        last,
        email,
        age,
        street,
        city,
        state,
        f"{zip_prefix}{rng.randint(0, 99):02d}",
        plan,
        f"{spend:.2f}",
        churned,
        last_active.isoformat(),
        note,
    ]


def main():
    rng = random.Random(SEED)
    span_days = (LAST_SIGNUP - FIRST_SIGNUP).days
    # Sequential ids sign up in date order, as they would in a real system.
    signup_dates = sorted(FIRST_SIGNUP + datetime.timedelta(days=rng.randint(0, span_days)) for _ in range(ROW_COUNT))
    rows = [make_row(rng, i + 1, day) for i, day in enumerate(signup_dates)]

    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT_PATH, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)

    with open(OUT_PATH, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines()[1:]
    lengths = [len(line) for line in lines]
    print(f"wrote {OUT_PATH}")
    print(f"rows: {len(rows)}")
    print(f"line length: mean {sum(lengths) / len(lengths):.1f}, min {min(lengths)}, max {max(lengths)}")


if __name__ == "__main__":
    main()
