//! Paired, interleaved timing of a baseline and a candidate, for ratios that hold on a
//! shared, loaded machine: many short rounds, each timing the baseline and the candidate
//! back to back (alternating which goes first).
//!
//! Two estimates come out. The ratio of the fastest round of each side
//! ([`Paired::ratio`]) drops every round in which the scheduler took the CPU away, which on
//! an oversubscribed machine is most of the noise; it is the figure the README reports. The
//! median of the per-round ratios ([`Paired::median_ratio`]) is printed beside it as a
//! check: when the two disagree, the run was too noisy to trust.

use std::time::Instant;

/// Result of [`measure`].
#[derive(Clone, Copy, Debug)]
pub struct Paired {
    /// ns per baseline call in its fastest round.
    pub baseline_ns: f64,
    /// ns per candidate call in its fastest round.
    pub candidate_ns: f64,
    /// `candidate_ns / baseline_ns`.
    pub ratio: f64,
    /// Median over rounds of candidate / baseline (same round).
    pub median_ratio: f64,
    /// Rounds measured.
    pub rounds: usize,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values.get(n / 2).copied().unwrap_or(f64::NAN),
        n => {
            let lo = values.get(n / 2 - 1).copied().unwrap_or(f64::NAN);
            let hi = values.get(n / 2).copied().unwrap_or(f64::NAN);
            (lo + hi) / 2.0
        }
    }
}

fn time_per_call(calls: usize, f: &mut impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    start.elapsed().as_secs_f64() * 1e9 / calls.max(1) as f64
}

/// Times `calls` calls of `baseline` and of `candidate` per round, for `rounds` rounds,
/// after one untimed warm-up round.
pub fn measure(
    rounds: usize,
    calls: usize,
    mut baseline: impl FnMut(),
    mut candidate: impl FnMut(),
) -> Paired {
    time_per_call(calls, &mut baseline);
    time_per_call(calls, &mut candidate);
    let mut b = Vec::with_capacity(rounds);
    let mut c = Vec::with_capacity(rounds);
    let mut r = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (tb, tc) = if round % 2 == 0 {
            let tb = time_per_call(calls, &mut baseline);
            (tb, time_per_call(calls, &mut candidate))
        } else {
            let tc = time_per_call(calls, &mut candidate);
            (time_per_call(calls, &mut baseline), tc)
        };
        b.push(tb);
        c.push(tc);
        r.push(tc / tb);
    }
    let fastest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (baseline_ns, candidate_ns) = (fastest(&b), fastest(&c));
    Paired {
        baseline_ns,
        candidate_ns,
        ratio: candidate_ns / baseline_ns,
        median_ratio: median(&mut r),
        rounds,
    }
}

/// `1234567.0` ns as `1.235 ms`, `1234.0` as `1.234 us`.
pub fn format_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// The machine line printed under each table: CPU model (from /proc/cpuinfo), CPUs
/// available, and the 1-minute load average at the time of the call.
pub fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load1 = load.split_whitespace().next().unwrap_or("?").to_owned();
    format!("{model}, {cpus} CPUs, load average {load1}")
}
