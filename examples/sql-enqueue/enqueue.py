#!/usr/bin/env python3
"""Enqueue a handover job from Python in the producer's own PostgreSQL transaction (psycopg 3).

The order row and its job commit together or not at all: a rolled-back transaction leaves
neither, and a committed one wakes an idle handover worker at once (the jobs table's trigger
sends a NOTIFY at commit), so the job is done long before the worker's next poll.

    python3 enqueue.py --url postgres://USER@HOST/DB --schema SCHEMA [--timeout 10]

SCHEMA is the one handover's workers use (their --store URL's search_path). The last line printed
is `result rolled_back=ID committed=ID`; the exit status is non-zero if the rolled-back job exists
or the committed one is not completed within the timeout.
"""

import argparse
import sys
import time

import psycopg
from psycopg.types.json import Jsonb


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="PostgreSQL URL (libpq syntax)")
    parser.add_argument("--schema", required=True, help="handover's schema")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the job")
    args = parser.parse_args()

    # search_path: handover's tables and its handover_add_job function live in this schema.
    # autocommit: a statement outside a `with conn.transaction()` block commits on its own.
    with psycopg.connect(
        args.url, options=f"-c search_path={args.schema}", autocommit=True
    ) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS py_orders ("
            " id bigserial PRIMARY KEY, item text NOT NULL, job_id bigint NOT NULL)"
        )

        # 1. The order and its job in a transaction that fails: neither is kept.
        rolled_back = None
        try:
            with conn.transaction():
                rolled_back = add_order(conn, "refused order")
                raise RuntimeError("payment declined")  # anything that aborts the transaction
        except RuntimeError as err:
            print(f"rolled back ({err}): order and job {rolled_back} are gone")

        # 2. The same, committed: the job is claimed by a running worker at once.
        with conn.transaction():
            committed = add_order(conn, "paid order")
        committed_at = time.monotonic()
        print(f"committed: order and job {committed}")

        if job_status(conn, rolled_back) is not None:
            sys.exit(f"FAIL: the rolled-back job {rolled_back} exists")
        status = wait_until_done(conn, committed, args.timeout)
        took = time.monotonic() - committed_at
        if status != "completed":
            sys.exit(f"FAIL: job {committed} is {status} after {args.timeout}s")
        result = conn.execute("SELECT result FROM jobs WHERE id = %s", (committed,)).fetchone()[0]
        print(f"job {committed} completed {took * 1000:.0f} ms after the commit: {result}")
        print(f"result rolled_back={rolled_back} committed={committed}")


def add_order(conn, item):
    """Adds the application's row and its job, in the caller's transaction; returns the job id."""
    job_id = conn.execute(
        "SELECT handover_add_job('demo', %s)",
        (Jsonb({"seed": item, "iterations": 1000}),),
    ).fetchone()[0]
    conn.execute("INSERT INTO py_orders (item, job_id) VALUES (%s, %s)", (item, job_id))
    return job_id


def job_status(conn, job_id):
    row = conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
    return row[0] if row else None


def wait_until_done(conn, job_id, timeout):
    deadline = time.monotonic() + timeout
    while True:
        status = job_status(conn, job_id)
        if status in ("completed", "dead", "cancelled") or time.monotonic() > deadline:
            return status
        time.sleep(0.02)


if __name__ == "__main__":
    main()
