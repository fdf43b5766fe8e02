"""The demo domain: an orthodontic practice's revenue data, and the business activity that changes it.

``World`` holds the current source rows as DMS would write them (wire text, None for NULL) and records every
row change with its commit time. ``seed_world`` builds the initial (full-load) state; ``run_activity`` runs
one source transaction. Column lists mirror ``schemas/tables/*.toml`` (a test keeps them equal).

Foreign keys stay consistent in every committed state: a patient is deleted only while nothing refers to it,
plans and claims are never deleted, and payments (the leaves) are voided by deleting them.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

Row = dict[str, str | None]

COLUMNS: dict[str, tuple[str, ...]] = {
    "practices": ("practice_id", "name", "phone", "email", "address_line", "city", "state", "postal_code",
                  "timezone", "is_active", "opened_on", "created_at", "updated_at"),
    "patients": ("patient_id", "practice_id", "first_name", "last_name", "date_of_birth", "email", "phone",
                 "guardian_name", "is_active", "notes", "created_at", "updated_at"),
    "payment_plans": ("plan_id", "patient_id", "practice_id", "treatment", "total_fee", "down_payment",
                      "monthly_amount", "term_months", "start_date", "status", "autopay", "created_at",
                      "updated_at"),
    "payments": ("payment_id", "plan_id", "patient_id", "amount", "method", "status", "reference", "memo",
                 "paid_at", "created_at", "updated_at"),
    "insurance_claims": ("claim_id", "plan_id", "patient_id", "payer_name", "claim_number", "billed_amount",
                         "allowed_amount", "paid_amount", "status", "submitted_on", "adjudicated_on",
                         "denial_reason", "created_at", "updated_at"),
}  # fmt: skip
KEY = {t: cols[0] for t, cols in COLUMNS.items()}  # every demo table has a single bigint key, first
TIMESTAMP_COLUMNS = ("created_at", "updated_at", "paid_at")

_FIRST = ("Olivia", "Liam", "Emma", "Noah", "Ava", "Mateo", "Sofía", "José", "Zoë", "Chloé", "Renée",
          "Björn", "Siobhán", "Łukasz", "Søren", "Aoife", "Jürgen", "Yūki", "Mía", "Ethan", "Amélie",
          "Nguyễn Thị")  # fmt: skip
_LAST = ("Smith", "Johnson", "García", "Müller", "O'Brien", "Nguyễn", "Kowalski", "Dubois", "Østergaard",
         "Smith-Jones", "Hernández", "Patel", "Kim", "田中", "Ivanova", "D'Angelo", "Brown",
         "Lee")  # fmt: skip
# Free text exercises CSV quoting: commas, doubled quotes, embedded newlines (LF and CRLF), non-ASCII.
NOTES = (
    "Prefers afternoon appointments, after 3pm",
    'Mother says "no metal brackets", wants aligners',
    "Allergic to latex.\nUse nitrile gloves.",
    "Transferred from Dr. Álvarez, Dallas, TX",
    'Sibling discount ½ — approved by "Dr. K"',
    "Line one\r\nline two, after CRLF",
    "Anxious patient 🦷; schedule longer slots",
)
TRICKY_NOTE = 'Allergic to latex.\r\nUse nitrile gloves, "not latex".\nMom: 🦷 ½ price, per "Dr. K"'
_TREATMENTS = ("Comprehensive braces", "Clear aligners", "Phase I interceptive", "Lingual braces",
               "Retainers, upper and lower")  # fmt: skip
_PAYERS = ("Delta Dental", "MetLife", "Cigna Dental", "Aetna", "Guardian", "United Concordia, Inc.")
_DENIALS = (
    "Frequency limitation, lifetime ortho maximum reached",
    'Missing "pre-authorization" number',
    "Patient not eligible on date of service",
)
_CITIES = (("Austin", "TX", "America/Chicago"), ("Portland", "OR", "America/Los_Angeles"),
           ("Raleigh", "NC", "America/New_York"), ("Boulder", "CO", "America/Denver"))  # fmt: skip
CENT = Decimal("0.01")


def ts_text(t: datetime) -> str:
    """A datetime2 value as DMS writes it to CSV: microsecond precision."""
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def money(d: Decimal) -> str:
    return str(d.quantize(CENT))


def _bit(b: bool) -> str:
    return "1" if b else "0"


@dataclass(slots=True)
class RowChange:
    table: str
    op: str  # "I" | "U" | "D"
    values: tuple[str | None, ...]  # the new image (I, U) or the old image (D), in COLUMNS order
    commit: datetime


@dataclass(slots=True)
class World:
    """The source database as the generator sees it, plus the changes committed since the last drain."""

    rng: random.Random
    now: datetime
    rows: dict[str, dict[int, Row]] = field(default_factory=lambda: {t: {} for t in COLUMNS})
    next_id: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 1))
    log: list[RowChange] = field(default_factory=list)
    voided: dict[int, Row] = field(default_factory=dict)  # deleted payments that may be restored later

    def new_id(self, table: str) -> int:
        n = self.next_id[table]
        self.next_id[table] = n + 1
        return n

    def insert(self, table: str, row: Row) -> None:
        key = int(str(row[KEY[table]]))
        assert key not in self.rows[table], f"{table} {key} exists"
        self.rows[table][key] = row
        self._record(table, "I", row)

    def update(self, table: str, key: int, **changes: str | None) -> None:
        row = self.rows[table][key]
        row.update(changes)
        if "updated_at" in row:
            row["updated_at"] = ts_text(self.now)
        self._record(table, "U", row)

    def delete(self, table: str, key: int) -> Row:
        row = self.rows[table].pop(key)
        self._record(table, "D", row)
        return row

    def _record(self, table: str, op: str, row: Row) -> None:
        self.log.append(RowChange(table, op, tuple(row[c] for c in COLUMNS[table]), self.now))

    def pick(self, table: str, pred: Callable[[Row], bool] = lambda _: True) -> int | None:
        """A random key of ``table`` whose row satisfies ``pred``; None when there is none."""
        rows = self.rows[table]
        keys = list(rows)
        # Sampling first keeps a pick O(1)-ish on big tables; the scan is the fallback for rare predicates.
        for _ in range(min(len(keys), 24)):
            k = self.rng.choice(keys)
            if pred(rows[k]):
                return k
        matching = [k for k in keys if pred(rows[k])]
        return self.rng.choice(matching) if matching else None


def _person(rng: random.Random, name: tuple[str, str] | None = None) -> tuple[str, str, str]:
    first, last = name or (rng.choice(_FIRST), rng.choice(_LAST))
    ascii_name = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore").decode()
    local = "".join(ch for ch in ascii_name.lower() if ch.isalnum() or ch == ".").strip(".") or "patient"
    return first, last, local


def _phone(rng: random.Random) -> str:
    return f"({rng.randint(201, 989)}) 555-{rng.randint(0, 9999):04d}"


def add_practice(w: World) -> int:
    pid = w.new_id("practices")
    city, state, tz = w.rng.choice(_CITIES)
    opened = date(2005, 1, 1) + timedelta(days=w.rng.randint(0, 5000))
    w.insert("practices", {
        "practice_id": str(pid), "name": f"{city} Smiles Orthodontics #{pid}", "phone": _phone(w.rng),
        "email": f"frontdesk{pid}@smiles.example",
        "address_line": f"{w.rng.randint(10, 9999)} Main St, Suite {pid}",
        "city": city, "state": state, "postal_code": f"{w.rng.randint(10000, 99999)}", "timezone": tz,
        "is_active": "1", "opened_on": opened.isoformat(), "created_at": ts_text(w.now),
        "updated_at": ts_text(w.now),
    })  # fmt: skip
    return pid


def add_patient(w: World, *, notes: str | None = None, name: tuple[str, str] | None = None) -> int:
    rng = w.rng
    pid = w.new_id("patients")
    first, last, local = _person(rng, name)
    dob = w.now.date() - timedelta(days=rng.randint(8 * 365, 45 * 365))
    minor = (w.now.date() - dob).days < 18 * 365
    w.insert("patients", {
        "patient_id": str(pid), "practice_id": str(rng.choice(list(w.rows["practices"]))),
        "first_name": first, "last_name": last, "date_of_birth": dob.isoformat(),
        "email": f"{local}{pid}@mail.example" if rng.random() < 0.8 else None,
        "phone": _phone(rng) if rng.random() < 0.9 else None,
        "guardian_name": f"{rng.choice(_FIRST)} {last}" if minor else None, "is_active": "1",
        "notes": notes if notes is not None else (rng.choice(NOTES) if rng.random() < 0.15 else None),
        "created_at": ts_text(w.now), "updated_at": ts_text(w.now),
    })  # fmt: skip
    return pid


def add_plan(w: World, patient_id: int) -> int:
    rng = w.rng
    plan_id = w.new_id("payment_plans")
    fee = Decimal(rng.randrange(3500, 7600, 50))
    down = (fee * Decimal(rng.choice((10, 15, 20, 25))) / 100).quantize(CENT)
    term = rng.choice((12, 18, 24, 30))
    patient = w.rows["patients"][patient_id]
    w.insert("payment_plans", {
        "plan_id": str(plan_id), "patient_id": str(patient_id), "practice_id": patient["practice_id"],
        "treatment": rng.choice(_TREATMENTS), "total_fee": money(fee), "down_payment": money(down),
        "monthly_amount": money((fee - down) / term), "term_months": str(term),
        "start_date": w.now.date().isoformat(), "status": "active", "autopay": _bit(rng.random() < 0.6),
        "created_at": ts_text(w.now), "updated_at": ts_text(w.now),
    })  # fmt: skip
    return plan_id


def add_payment(w: World, plan_id: int, *, amount: str | None = None, payment_id: int | None = None) -> int:
    rng = w.rng
    plan = w.rows["payment_plans"][plan_id]
    pay_id = payment_id if payment_id is not None else w.new_id("payments")
    method = rng.choice(("card", "card", "ach", "cash", "check"))
    memo = rng.choice((None, None, None, "Paid at front desk, thank you!", 'Card ending 4242 "Visa"'))
    w.insert("payments", {
        "payment_id": str(pay_id), "plan_id": str(plan_id), "patient_id": plan["patient_id"],
        "amount": amount or plan["monthly_amount"], "method": method, "status": "posted",
        "reference": f"TX-{rng.randint(10**9, 10**10 - 1)}" if method in ("card", "ach") else None,
        "memo": memo, "paid_at": ts_text(w.now), "created_at": ts_text(w.now), "updated_at": ts_text(w.now),
    })  # fmt: skip
    return pay_id


def add_claim(w: World, plan_id: int) -> int:
    rng = w.rng
    plan = w.rows["payment_plans"][plan_id]
    claim_id = w.new_id("insurance_claims")
    w.insert("insurance_claims", {
        "claim_id": str(claim_id), "plan_id": str(plan_id), "patient_id": plan["patient_id"],
        "payer_name": rng.choice(_PAYERS), "claim_number": f"CLM-{w.now:%Y%m}-{claim_id:06d}",
        "billed_amount": money(Decimal(rng.choice((1000, 1500, 2000)))), "allowed_amount": None,
        "paid_amount": None, "status": "submitted", "submitted_on": w.now.date().isoformat(),
        "adjudicated_on": None, "denial_reason": None, "created_at": ts_text(w.now),
        "updated_at": ts_text(w.now),
    })  # fmt: skip
    return claim_id


def adjudicate(w: World, claim_id: int, *, paid: bool) -> None:
    """submitted -> pending -> paid | denied, as separate updates of the same row in one transaction."""
    claim = w.rows["insurance_claims"][claim_id]
    if claim["status"] == "submitted":
        w.update("insurance_claims", claim_id, status="pending")
    billed = Decimal(str(claim["billed_amount"]))
    today = w.now.date().isoformat()
    if paid:
        allowed = (billed * Decimal("0.8")).quantize(CENT)
        w.update("insurance_claims", claim_id, status="paid", allowed_amount=money(allowed),
                 paid_amount=money(allowed * Decimal("0.5")), adjudicated_on=today)  # fmt: skip
    else:
        w.update("insurance_claims", claim_id, status="denied", allowed_amount=money(Decimal(0)),
                 paid_amount=money(Decimal(0)), adjudicated_on=today,
                 denial_reason=w.rng.choice(_DENIALS))  # fmt: skip


def seed_world(w: World, *, practices: int, patients: int) -> None:
    """Build the state the full load will copy: history back-dated up to two years before ``w.now``."""
    load_time, rng = w.now, w.rng
    w.now = load_time - timedelta(days=3 * 365)
    for _ in range(practices):
        add_practice(w)
    for _ in range(patients):
        w.now = load_time - timedelta(days=rng.randint(1, 730), seconds=rng.randint(0, 86399))
        patient_id = add_patient(w)
        if rng.random() < 0.15:
            continue  # consultation only: no treatment yet
        plan_id = add_plan(w, patient_id)
        add_payment(w, plan_id, amount=w.rows["payment_plans"][plan_id]["down_payment"])
        claim_id = add_claim(w, plan_id) if rng.random() < 0.6 else None
        months = min(
            (load_time - w.now).days // 30, int(str(w.rows["payment_plans"][plan_id]["term_months"]))
        )
        for _ in range(min(months, rng.randint(0, 8))):
            w.now += timedelta(days=30, seconds=rng.randint(-3600, 3600))
            add_payment(w, plan_id)
        if claim_id is not None and rng.random() < 0.7:
            adjudicate(w, claim_id, paid=rng.random() < 0.8)
        if rng.random() < 0.1:
            w.update("payment_plans", plan_id, status=rng.choice(("completed", "on_hold", "cancelled")))
    w.now = load_time
    w.log.clear()


def _referenced_patients(w: World) -> set[str | None]:
    return {
        r["patient_id"] for t in ("payment_plans", "payments", "insurance_claims") for r in w.rows[t].values()
    }


def _active_plan(w: World) -> int | None:
    return w.pick("payment_plans", lambda r: r["status"] in ("active", "delinquent"))


def _new_patient(w: World, kind: str) -> bool:
    if kind == "new_patient_tricky":  # every quoting hazard in one row, so every feed has them
        patient_id = add_patient(w, notes=TRICKY_NOTE, name=("Zoë Łucja", "Nguyễn-O'Brien, Jr."))
    else:
        patient_id = add_patient(w)
    if kind != "consult" and w.rng.random() < 0.75:
        plan_id = add_plan(w, patient_id)
        add_payment(w, plan_id, amount=w.rows["payment_plans"][plan_id]["down_payment"])
    return True


def _payment(w: World, kind: str) -> bool:
    plan_id = _active_plan(w)
    if plan_id is None:
        return False
    add_payment(w, plan_id)
    if w.rows["payment_plans"][plan_id]["status"] == "delinquent":
        w.update("payment_plans", plan_id, status="active")
    return True


def _change_payment(w: World, kind: str) -> bool:
    pay_id = w.pick("payments", lambda r: r["status"] == "posted")
    if pay_id is None:
        return False
    if kind == "refund":
        w.update("payments", pay_id, status="refunded", memo='Refunded: overpayment, per "billing"')
        return True
    old = w.delete("payments", pay_id)
    if kind == "repost_payment":  # corrected amount, same key, same transaction
        fixed = Decimal(str(old["amount"])) + Decimal(w.rng.choice((-5, 5, 10)))
        add_payment(w, int(str(old["plan_id"])), amount=money(fixed), payment_id=pay_id)
    else:
        w.voided[pay_id] = old
    return True


def _restore_payment(w: World, kind: str) -> bool:
    """A payment voided in an earlier transaction comes back under its key."""
    if not w.voided:
        return False
    pay_id = w.rng.choice(sorted(w.voided))
    row = w.voided.pop(pay_id)
    w.insert("payments", {**row, "memo": "Restored: voided in error", "updated_at": ts_text(w.now)})
    return True


def _submit_claim(w: World, kind: str) -> bool:
    plan_id = _active_plan(w)
    if plan_id is None:
        return False
    add_claim(w, plan_id)
    return True


def _adjudicate(w: World, kind: str) -> bool:
    claim_id = w.pick("insurance_claims", lambda r: r["status"] in ("submitted", "pending"))
    if claim_id is None:
        return False
    paid = kind == "claim_paid" or (kind == "adjudicate" and w.rng.random() < 0.75)
    adjudicate(w, claim_id, paid=paid)
    return True


def _plan_status(w: World, kind: str) -> bool:
    plan_id = w.pick("payment_plans", lambda r: r["status"] not in ("completed", "cancelled"))
    if plan_id is None:
        return False
    current = w.rows["payment_plans"][plan_id]["status"]
    choices = ("on_hold", "delinquent", "completed", "cancelled") if current == "active" else ("active",)
    w.update("payment_plans", plan_id, status=w.rng.choice(choices), autopay=_bit(w.rng.random() < 0.5))
    return True


def _edit_patient(w: World, kind: str) -> bool:
    """The front desk saves the form several times: one row, several updates in one transaction."""
    patient_id = w.pick("patients")
    if patient_id is None:
        return False
    w.update("patients", patient_id, phone=_phone(w.rng))
    w.update("patients", patient_id, email=None)
    w.update("patients", patient_id, notes=w.rng.choice(NOTES))
    return True


def _delete_patient(w: World, kind: str) -> bool:
    """A duplicate registration that nothing refers to is removed."""
    referenced = _referenced_patients(w)
    patient_id = w.pick("patients", lambda r: r["patient_id"] not in referenced)
    if patient_id is None:
        return False
    w.delete("patients", patient_id)
    return True


def _practice_update(w: World, kind: str) -> bool:
    practice_id = w.pick("practices")
    if practice_id is None:
        return False
    w.update("practices", practice_id, phone=_phone(w.rng))
    return True


_ACTIVITIES: dict[str, Callable[[World, str], bool]] = {
    "new_patient": _new_patient, "new_patient_tricky": _new_patient, "consult": _new_patient,
    "payment": _payment, "void_payment": _change_payment, "repost_payment": _change_payment,
    "refund": _change_payment, "restore_payment": _restore_payment, "submit_claim": _submit_claim,
    "adjudicate": _adjudicate, "claim_paid": _adjudicate, "claim_denied": _adjudicate,
    "plan_status": _plan_status, "edit_patient": _edit_patient, "delete_patient": _delete_patient,
    "practice_update": _practice_update,
}  # fmt: skip


def run_activity(w: World, kind: str) -> bool:
    """Run one source transaction of ``kind`` at ``w.now``. False when nothing qualified (no change made)."""
    try:
        action = _ACTIVITIES[kind]
    except KeyError:
        raise ValueError(f"unknown activity {kind!r}") from None
    return action(w, kind)


ACTIVITY_WEIGHTS = {
    "payment": 30, "new_patient": 9, "consult": 2, "adjudicate": 10, "submit_claim": 8, "plan_status": 8,
    "edit_patient": 6, "void_payment": 4, "repost_payment": 3, "restore_payment": 1, "refund": 2,
    "delete_patient": 1, "practice_update": 1,
}  # fmt: skip
# Run first in the first flushes of every generate/generate_more call, so each feed holds every hard case:
# two payments voided and one restored in the same file, the other restored in the next file.
SCRIPTED = (
    ("consult", "new_patient_tricky", "repost_payment", "edit_patient", "void_payment", "void_payment",
     "claim_paid", "claim_denied", "delete_patient", "restore_payment", "refund"),
    ("restore_payment",),
)  # fmt: skip
