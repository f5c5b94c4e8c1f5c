"""The example table's business rule, as a record validator (docs/tables.md, "Column types and validators"):

    synthloom generate runs/customers --num-records 20 --validator examples/rules.py:active_after_signup

The model learns that a customer is last active after signing up from the data, not as a rule, and now
and then writes a row where it is not so; a validator turns what the data's owner knows into a check, and
generation draws other rows in place of the ones it rejects (counted as invalid in the summary line).
"""

import csv

SIGNUP, LAST_ACTIVE = 1, 13  # columns of examples/data/customers.csv (signup_date, last_active): ISO dates


def active_after_signup(record: str) -> bool:
    """A customer's last activity is on or after their signup (ISO dates compare as text)."""
    row = next(csv.reader([record]))
    if row[LAST_ACTIVE] < row[SIGNUP]:
        raise ValueError(f"last_active {row[LAST_ACTIVE]} is before signup_date {row[SIGNUP]}")
    return True
