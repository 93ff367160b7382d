"""`python -m bench` (`make bench`): every figure beside its yardstick, in one table.

Runs against the Redis and PostgreSQL of REDIS_URL / DATABASE_URL (the Makefile makes
them reachable), in a dedicated database (`vidpulse_bench_<run>`) and key prefix
(`vpbench:<run>:`), both removed at the end. `--quick` (or BENCH_QUICK=1, as in
`BENCH_QUICK=1 make bench`) shortens every measurement.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from bench import cluster, dashboard, drain, e2e, e2e_live, ingest, lengths, sessions
from bench.env import BenchEnv
from bench.report import Row, chart, machine, markdown, service_versions, table, write_json

PARTS = (
    "ingest",
    "processors",
    "lengths",
    "e2e",
    "e2e-nofold",
    "e2e-bench",
    "sessions",
    "dashboard",
    "cluster",
)
# Run when --only is not given: the bench-shape end to end is left out (another 2 minutes).
DEFAULT_PARTS = (
    "ingest",
    "processors",
    "lengths",
    "e2e",
    "e2e-nofold",
    "sessions",
    "dashboard",
    "cluster",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 3 minutes)")
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_PARTS),
        help=f"comma-separated parts to run: {', '.join(PARTS)} (default: all but e2e-bench)",
    )
    return parser.parse_args(argv)


def rows_of(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "ingest" in results:
        single = results["ingest"]["single"]
        rows.append(
            Row(
                figure="ingest, 1 event/request (1 worker)",
                value=single["ingest"]["rps"],
                unit="req/s",
                baseline_name="bare Starlette 202",
                baseline=single["bare"]["rps"],
                ratio=single["ratio"],
                target=">= 0.80",
                passed=single["ratio"] >= 0.80,
            )
        )
        batched = results["ingest"]["batched"]
        rows.append(
            Row(
                figure=f"ingest, 100 events/request ({batched['workers']} workers)",
                value=batched["ingest"]["events_per_s"],
                unit="events/s",
                baseline_name="redis-benchmark XADD -P 100",
                baseline=batched["redis_benchmark"]["ops_per_s"],
                ratio=batched["ratio"],
                target=">= 0.40",
                passed=batched["ratio"] >= 0.40,
            )
        )
    if "processors" in results:
        for shape in results["processors"]["shapes"].values():
            base = shape["baseline"]["events_per_s"]
            for name, r in shape["processors"].items():
                rows.append(
                    Row(
                        figure=f"processor {name}: drain {shape['backlog']:,} ({shape['label']})",
                        value=r["events_per_s"],
                        unit="events/s",
                        baseline_name="one-at-a-time worker",
                        baseline=base,
                        ratio=r["ratio"],
                        target=">= 20x",
                        passed=r["ratio"] >= 20,
                    )
                )
            ceiling = shape.get("without_fold")
            if ceiling:
                rows.append(
                    Row(
                        figure="  processor without a fold (read, decode, ledger, ack): same",
                        value=ceiling["events_per_s"],
                        unit="events/s",
                        baseline_name="one-at-a-time worker",
                        baseline=base,
                        ratio=ceiling["ratio"],
                        target="(ceiling)",
                        passed=True,
                        speedup=True,
                    )
                )
    if "lengths" in results:
        run = results["lengths"]
        early_label = run["windows"]["early"]["label"]
        late_label = run["windows"]["late"]["label"]
        for name, r in run["processors"].items():
            early, late = r["early"], r["late"]
            if not early or not late:
                continue
            rows.append(
                Row(
                    figure=f"processor {name}: cost/event, {late_label} of 240-beacon sessions",
                    value=late["us_per_event_median"],
                    unit="us/event",
                    value_text=f"{late['us_per_event_median']:,.0f} us "
                    f"(window {late['us_per_event']:,.0f})",
                    baseline_name=early_label,
                    baseline=early["us_per_event_median"],
                    baseline_text=f"{early['us_per_event_median']:,.0f} us "
                    f"(window {early['us_per_event']:,.0f}), {early_label}",
                    ratio=r["late_over_early"],
                    target="(reported)",
                    passed=True,
                )
            )
    if "e2e" in results:
        rows += e2e_rows(results["e2e"], "live shape, 1-2 events/request (wrk)")
    if "e2e_bench" in results:
        rows += e2e_rows(results["e2e_bench"], "bench shape, ~5.5 events/request (simulate)")
    if "e2e_nofold" in results:
        rows += e2e_rows(
            results["e2e_nofold"], "live shape, every processor without its fold", ceiling=True
        )
    if "sessions" in results:
        late = results["sessions"]["late_event_ms"]
        small, large = late["1000"], late["100000"]
        rows.append(
            Row(
                figure="late event after 100,000 ranges (progress + heatmap)",
                value=large,
                unit="ms",
                value_text=f"{large:,.0f} ms",
                baseline_name="after 1,000 ranges",
                baseline=small,
                baseline_text=f"{small:,.0f} ms (after 1,000 ranges)",
                ratio=large / small if small else None,
                # 100 times the ranges; bounded state keeps the cost about the same.
                target="<= 10x",
                passed=large <= 10 * small,
            )
        )
    if "dashboard" in results:
        rows += dashboard_rows(results["dashboard"])
    if "cluster" in results:
        rows += cluster.rows(results["cluster"])
    return rows


def e2e_rows(run: dict[str, Any], shape: str, *, ceiling: bool = False) -> list[Row]:
    """The end to end run's rows; `ceiling`: a run without the folds, reported, not judged."""
    worst = run["worst_group"]
    sender = run["sender"]
    sent = sender.get("achieved_rate", 0.0)
    lag = run["worst_lag_p99_s"] or 0.0
    target = run["lag_target_s"]
    rps = sender.get("requests_per_s")
    requests = f" ({rps:,.0f} req/s)" if rps else ""
    rows = [
        Row(
            figure=f"end to end {run['rate']:,.0f} ev/s x {run['duration_s']:.0f}s, {shape}: "
            "p99 lag",
            value=lag,
            unit="s",
            value_text=f"{lag:.2f} s ({worst})",
            baseline_name="offered",
            baseline=sent,
            baseline_text=f"{sent:,.0f} ev/s sent{requests}, {run.get('accepted', 0):,} accepted",
            target="(ceiling)" if ceiling else f"< {target:g} s",
            passed=lag < target and sent >= 0.95 * run["rate"],
        )
    ]
    for name, g in run["groups"].items():
        caught = g["caught_up_after_load_s"]
        rows.append(
            Row(
                figure=f"  lag of {name}: p99 (p50, max)",
                value=g["lag_p99_s"],
                unit="s",
                value_text=f"{g['lag_p99_s']:.2f} s ({g['lag_p50_s']:.2f}, {g['lag_max_s']:.2f})",
                baseline_name="caught up",
                baseline=0,
                baseline_text="not caught up"
                if caught is None
                else f"caught up {caught:.1f} s after the load",
                target="(ceiling)" if ceiling else f"< {target:g} s",
                passed=g["lag_p99_s"] < target,
            )
        )
    return rows + cpu_rows(run.get("cpu") or {})


def cpu_rows(cpu: dict[str, Any]) -> list[Row]:
    """Where the CPU went during the load (bench/cpu.py): processors, PostgreSQL, the rest."""
    parts: dict[str, float] = cpu.get("parts") or {}
    if not parts:
        return []
    machine = f"{cpu['machine_busy_cores']:.2f} of {cpu['cores']} cores busy (the machine)"

    def group(prefix: str) -> tuple[float, str]:
        mine = {p.removeprefix(prefix): c for p, c in parts.items() if p.startswith(prefix)}
        each = ", ".join(f"{n} {c:.2f}" for n, c in sorted(mine.items(), key=lambda i: -i[1]))
        return sum(mine.values()), each

    rows = []
    for label, prefix in (("processors", "processor "), ("PostgreSQL", "postgres ")):
        total, each = group(prefix)
        if each:
            rows.append((label, total, f"{total:.2f} cores ({each})"))
    rest = [(n, parts[n]) for n in ("ingest", "redis", "wrk") if n in parts]
    if rest:
        names = ", ".join("Redis" if n == "redis" else n for n, _ in rest)
        cores = ", ".join(f"{c:.2f}" for _, c in rest)
        rows.append((names, sum(c for _, c in rest), f"{cores} cores"))
    return [
        Row(
            figure=f"  CPU during the load: {label}",
            value=total,
            unit="cores",
            value_text=text,
            baseline_name="machine",
            baseline=cpu["machine_busy_cores"],
            baseline_text=machine,
            target="(reported)",
            passed=True,
        )
        for label, total, text in rows
    ]


def dashboard_rows(run: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, label in (("overview", "/api/v1/overview"), ("video", "/api/v1/videos/{id}")):
        c = run["cached"][name]
        rows.append(
            Row(
                figure=f"dashboard cached GET {label}",
                value=c["dashboard_rps"],
                unit="req/s",
                baseline_name="bare Starlette GET, same bytes",
                baseline=c["bare_rps"],
                ratio=c["ratio"],
                target=">= 0.50",
                passed=c["ratio"] >= 0.50,
            )
        )
        rows.append(
            Row(
                figure="  same, every read from Redis (memo off)",
                value=c["redis_rps"],
                unit="req/s",
                baseline_name="bare Starlette GET, same bytes",
                baseline=c["bare_rps"],
                ratio=c["redis_ratio"],
                target="(reported)",
                passed=True,
            )
        )
    size = f"{run['videos']:,} videos, {run['sessions']:,} sessions"
    for name, label, limit in (("overview", "overview", None), ("video", "one video", 50.0)):
        u = run["uncached"][name]
        rows.append(
            Row(
                figure=f"dashboard uncached {label}: p99",
                value=u["p99_ms"],
                unit="ms",
                value_text=f"{u['p99_ms']:.1f} ms (p50 {u['p50_ms']:.1f})",
                baseline_name=size,
                baseline=0,
                baseline_text=size,
                target=f"< {limit:g} ms" if limit else "(reported)",
                passed=limit is None or u["p99_ms"] < limit,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.quick = args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        print(f"bench: unknown part(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    env = BenchEnv.from_environ()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {"started": stamp, "quick": args.quick, "machine": machine()}
    if args.quick:
        icfg = ingest.IngestConfig(
            duration_s=5, warmup_s=1, rounds=2, redis_benchmark_requests=300_000
        )
        dcfg = drain.DrainConfig(backlog=100_000, live_beacons=5, baseline_max_seconds=8)
        lcfg = lengths.LengthsConfig(sessions=500)
        ecfg = e2e.E2EConfig(duration_s=20)
        lecfg = e2e_live.LiveE2EConfig(duration_s=20)
        dashcfg = dashboard.DashboardConfig(duration_s=5, warmup_s=1, rounds=2)
    else:
        icfg = ingest.IngestConfig()
        dcfg = drain.DrainConfig()
        lcfg = lengths.LengthsConfig()
        ecfg = e2e.E2EConfig()
        lecfg = e2e_live.LiveE2EConfig()
        dashcfg = dashboard.DashboardConfig()
    print(f"vidpulse bench ({'quick' if args.quick else 'full'}): {', '.join(parts)}", flush=True)
    env.prepare()
    try:
        client = env.redis()
        with env.connect() as conn:
            results["versions"] = service_versions(client, conn)
        client.close()
        results["environment"] = env.describe()
        if "ingest" in parts:
            print("- ingest: bare endpoint vs POST /v1/events, then redis-benchmark", flush=True)
            results["ingest"] = ingest.run(env, icfg)
        if "processors" in parts:
            print(
                f"- processors: one-at-a-time worker, then each of them, on {dcfg.backlog:,} "
                f"events (bench shape) and {dcfg.live_sessions:,} live sessions x "
                f"{dcfg.live_beacons} beacons",
                flush=True,
            )
            results["processors"] = drain.run(env, dcfg)
        if "lengths" in parts:
            print(
                f"- session length: progress and heatmap on {lcfg.sessions:,} concurrent "
                "240-beacon sessions, early vs late beacons",
                flush=True,
            )
            results["lengths"] = lengths.run(env, lcfg)
        if "e2e" in parts:
            print(
                f"- end to end, live shape: {lecfg.rate:,.0f} events/s for "
                f"{lecfg.duration_s:.0f}s, 1-2 events a request (wrk)",
                flush=True,
            )
            results["e2e"] = e2e_live.run(env, lecfg)
        if "e2e-nofold" in parts:
            print(
                f"- end to end, live shape, every processor without its fold: "
                f"{lecfg.rate:,.0f} events/s for {lecfg.duration_s:.0f}s",
                flush=True,
            )
            results["e2e_nofold"] = e2e_live.run(env, lecfg, fold=False)
        if "e2e-bench" in parts:
            print(
                f"- end to end, bench shape: {ecfg.rate:,.0f} events/s for "
                f"{ecfg.duration_s:.0f}s (vidpulse simulate)",
                flush=True,
            )
            results["e2e_bench"] = e2e.run(env, ecfg)
        if "sessions" in parts:
            print("- sessions: one late event after 1,000 and 100,000 played ranges", flush=True)
            results["sessions"] = sessions.run(env, sessions.SessionsConfig())
        if "dashboard" in parts:
            print(
                f"- dashboard: {dashcfg.videos:,} videos, {dashcfg.sessions:,} sessions; "
                "uncached reads, then cached reads vs a bare GET",
                flush=True,
            )
            results["dashboard"] = dashboard.run(env, dashcfg)
        if "cluster" in parts:
            ccfg = cluster.ClusterConfig(duration_s=5, rounds=2) if args.quick else None
            print(
                "- cluster: 1 Redis vs a 3-master Redis Cluster, ingest and end to end",
                flush=True,
            )
            results["cluster"] = cluster.run(env, ccfg or cluster.ClusterConfig())
    finally:
        env.cleanup()
    results["machine"]["load_average_end"] = machine()["load_average"]
    rows = rows_of(results)
    results["table"] = [r.cells() for r in rows]
    results["table_markdown"] = markdown(rows)
    path = write_json(results, stamp)
    e2e_run = results.get("e2e") or results.get("e2e_bench")
    png = chart(e2e_run, stamp) if e2e_run else None
    print()
    print(table(rows))
    for key in ("e2e", "e2e_bench"):
        for name, found in results.get(key, {}).get("processors_exited_or_warned", {}).items():
            code = found["exit_code"]
            state = "still running" if code is None else f"exited {code}"
            print(f"{key}: processor {name} {state}, logged: {found['stderr_tail'][-300:]}")
    print()
    print(f"results: {path}" + (f"\nchart:   {png}" if png else ""))
    # Misses are in the table; the exit code says only whether the bench itself ran.
    return 0


if __name__ == "__main__":
    sys.exit(main())
