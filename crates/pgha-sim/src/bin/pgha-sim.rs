//! `pgha-sim`: runs seeded cluster simulations (see the `pgha_sim` crate).
//!
//!   pgha-sim --seeds N [--from S] [--threads T]   a sweep; exits 1 on any violation
//!   pgha-sim --replay SEED                        one schedule with its whole trace
//!   ... --without fences|sync-race|failsafe-promise|silent-upstream                a protection off, to see what breaks

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pgha_sim::{Options, Protections, Report, run_seed};

const USAGE: &str = "usage: pgha-sim --seeds N [--from S] [--threads T] | --replay SEED \
                     [--without fences|sync-race|failsafe-promise|silent-upstream]";

struct Args {
    seeds: u64,
    from: u64,
    threads: usize,
    replay: Option<u64>,
    protections: Protections,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: 1000,
        from: 0,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        replay: None,
        protections: Protections::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse::<u64>().map_err(|e| format!("{name} {v:?}: {e}"))
        };
        match flag.as_str() {
            "--seeds" => args.seeds = value("--seeds")?,
            "--from" => args.from = value("--from")?,
            "--threads" => {
                args.threads = usize::try_from(value("--threads")?.max(1)).unwrap_or(1);
            }
            "--replay" => args.replay = Some(value("--replay")?),
            "--without" => match it.next().as_deref() {
                Some("fences") => args.protections.fences = false,
                Some("sync-race") => args.protections.sync_race = false,
                Some("failsafe-promise") => args.protections.failsafe_promise = false,
                Some("silent-upstream") => args.protections.silent_upstream = false,
                other => {
                    return Err(format!(
                        "--without {other:?}: fences, sync-race, failsafe-promise or silent-upstream"
                    ));
                }
            },
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.replay {
        return replay(seed, args.protections);
    }
    sweep(&args)
}

fn replay(seed: u64, protections: Protections) -> ExitCode {
    let report = run_seed(
        seed,
        Options {
            trace: true,
            record: true,
            protections,
        },
    );
    println!("seed {seed}: {}", report.scenario);
    summary(&report);
    if report.violation.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn summary(r: &Report) {
    match &r.violation {
        Some(v) => println!("seed {}: VIOLATION: {v}", r.seed),
        None => println!(
            "seed {}: ok, converged {:.1?} after the last fault healed; {} commits, {} acknowledged, {} events, {:.0?} simulated",
            r.seed,
            r.converged_after.unwrap_or_default(),
            r.commits,
            r.acknowledged,
            r.events,
            r.ended_at
        ),
    }
}

fn sweep(args: &Args) -> ExitCode {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(args.from));
    let end = args.from.saturating_add(args.seeds);
    let failures: Arc<Mutex<Vec<Report>>> = Arc::new(Mutex::new(Vec::new()));
    let simulated = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..args.threads)
        .map(|_| {
            let (next, failures, simulated) = (next.clone(), failures.clone(), simulated.clone());
            let without = without_args(args.protections);
            let options = Options {
                trace: false,
                record: false,
                protections: args.protections,
            };
            std::thread::spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let r = run_seed(seed, options);
                    simulated.fetch_add(r.ended_at.as_secs(), Ordering::Relaxed);
                    if r.violation.is_some() {
                        // Again with its trace (it replays exactly).
                        let r = run_seed(
                            seed,
                            Options {
                                record: true,
                                ..options
                            },
                        );
                        print_failure(&r, &without);
                        failures
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(r);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        if w.join().is_err() {
            eprintln!("a simulation thread panicked");
            return ExitCode::FAILURE;
        }
    }
    let n = args.seeds;
    let k = failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len();
    let secs = started.elapsed().as_secs_f64();
    let hours = simulated.load(Ordering::Relaxed) as f64 / 3600.0;
    println!(
        "seeds {}..{}: {hours:.0} simulated hours in {secs:.1} s on {} threads",
        args.from, end, args.threads
    );
    println!(
        "{n} schedules, {k} violations, {:.0} schedules/s",
        n as f64 / secs
    );
    if k > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_failure(r: &Report, without: &str) {
    let tail: Vec<&String> = r.trace_tail.iter().rev().take(25).collect();
    let mut out = format!(
        "seed {}: VIOLATION: {}\n  scenario: {}\n  last trace lines:\n",
        r.seed,
        r.violation
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        r.scenario
    );
    for line in tail.into_iter().rev() {
        out.push_str(&format!("    {line}\n"));
    }
    out.push_str(&format!(
        "  replay: scripts/simulate.sh --replay {}{without}\n",
        r.seed
    ));
    print!("{out}");
}

/// The `--without` arguments that give `p`.
fn without_args(p: Protections) -> String {
    let mut out = String::new();
    if !p.fences {
        out.push_str(" --without fences");
    }
    if !p.sync_race {
        out.push_str(" --without sync-race");
    }
    if !p.failsafe_promise {
        out.push_str(" --without failsafe-promise");
    }
    if !p.silent_upstream {
        out.push_str(" --without silent-upstream");
    }
    out
}
