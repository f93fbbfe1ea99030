//! tapnet's fuzz targets on stable Rust: a mutation loop (no compiler instrumentation)
//! over frame ingress, the router, VXLAN decapsulation and the lab reader. Inputs are
//! bytes read through `arbitrary`'s `Unstructured` (see `input.rs`); seeds are valid
//! inputs built with the wire emitters; each execution runs under `catch_unwind`, so a
//! panic (or a failed invariant, which is an assertion) is a crash: counted, and its
//! input saved under `fuzz/artifacts/TARGET/`. An input whose run reaches something
//! no earlier input did (a decision, a drop reason, a path: see `Cov`) joins the
//! corpus that later mutations start from.
//!
//! ```text
//! tapnet-fuzz [--seconds N] [--seed N] [TARGET...]   each target N seconds (60), all if none named
//! tapnet-fuzz --repro TARGET FILE...                  run saved inputs once, panics shown as they are
//! tapnet-fuzz --list                                  the targets
//! ```
//!
//! `bench/fuzz.sh` builds this and runs every target.

mod frames;
mod input;
mod mutate;
mod targets;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use mutate::Rng;

/// What one execution reached: features (a site and a value there, hashed) that the
/// loop compares with everything seen before.
#[derive(Default)]
pub struct Cov {
    features: Vec<u64>,
}

impl Cov {
    /// Records that the run reached `site` with `value` (an action, a drop reason, a
    /// branch taken).
    pub fn hit(&mut self, site: u32, value: u64) {
        let mut x = (site as u64) << 40 ^ value;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.features.push(x ^ (x >> 31));
    }
}

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// Valid inputs to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Runs one input; panics on a crash or a failed invariant.
    pub run: fn(&[u8], &mut Cov),
    /// Inputs are kept at most this long.
    pub max_len: usize,
    /// Text: line-level mutations too.
    pub text: bool,
}

thread_local! {
    /// The last panic's location and message, kept by the quiet hook.
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Replaces the panic hook with one that only remembers the panic (the loop reports
/// each distinct crash once, not every time).
fn quiet_panics() {
    panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(|| "?".to_string(), |l| format!("{}:{}", l.file(), l.line()));
        let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "(no message)".to_string()
        };
        LAST_PANIC.with(|p| *p.borrow_mut() = Some((location, message)));
    }));
}

pub(crate) fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The counts of one target's run.
struct Outcome {
    execs: u64,
    crashes: u64,
    corpus: usize,
    features: usize,
}

/// Crashing inputs kept per distinct crash (location), at most.
const SAVED_PER_CRASH: usize = 5;
/// Inputs in the corpus at most (new ones then replace random old ones).
const CORPUS_MAX: usize = 20_000;

fn fuzz(t: &Target, time: Duration, seed: u64, artifacts: &Path) -> Outcome {
    let mut rng = Rng::new(seed ^ fnv(t.name.as_bytes()));
    let mut corpus: Vec<Vec<u8>> = (t.seeds)();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut crashes_at: HashMap<String, usize> = HashMap::new();
    let (mut execs, mut crashes) = (0u64, 0u64);
    let dir = artifacts.join(t.name);
    let mut cov = Cov::default();
    let start = Instant::now();
    let seeds = corpus.len();
    let mut i = 0usize;
    loop {
        // The seeds first, as they are; then mutations of the corpus.
        let data = if i < seeds {
            corpus[i].clone()
        } else {
            if i.is_multiple_of(64) && start.elapsed() >= time {
                break;
            }
            let mut d = corpus[rng.below(corpus.len())].clone();
            let other = &corpus[rng.below(corpus.len())];
            if t.text {
                mutate::mutate_text(&mut rng, &mut d, other, t.max_len);
            } else {
                mutate::mutate(&mut rng, &mut d, other, t.max_len);
            }
            d
        };
        i += 1;
        cov.features.clear();
        let result = panic::catch_unwind(AssertUnwindSafe(|| (t.run)(&data, &mut cov)));
        execs += 1;
        if result.is_err() {
            crashes += 1;
            let (location, message) = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| ("?".into(), "?".into()));
            let n = crashes_at.entry(location.clone()).or_insert(0);
            *n += 1;
            if *n <= SAVED_PER_CRASH {
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(format!("crash-{:016x}", fnv(&data)));
                let saved = std::fs::write(&path, &data).is_ok();
                let _ = std::fs::write(
                    path.with_extension("txt"),
                    format!("{location}: {message}\n"),
                );
                if *n == 1 {
                    eprintln!(
                        "{}: crash at {location}: {message}{}",
                        t.name,
                        if saved {
                            format!(" (input saved as {})", path.display())
                        } else {
                            String::new()
                        }
                    );
                }
            }
            continue;
        }
        let mut new = false;
        for &f in &cov.features {
            new |= seen.insert(f);
        }
        if new && i > seeds {
            if corpus.len() < CORPUS_MAX {
                corpus.push(data);
            } else {
                let at = rng.below(corpus.len());
                corpus[at] = data;
            }
        }
    }
    Outcome {
        execs,
        crashes,
        corpus: corpus.len(),
        features: seen.len(),
    }
}

/// Runs saved inputs once each, with the ordinary panic hook: the first crash ends
/// the process with its message and backtrace (RUST_BACKTRACE=1).
fn repro(t: &Target, files: &[String]) -> ExitCode {
    for f in files {
        let data = match std::fs::read(f) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{f}: {e}");
                return ExitCode::from(2);
            }
        };
        eprintln!("{}: running {f} ({} bytes)", t.name, data.len());
        (t.run)(&data, &mut Cov::default());
        eprintln!("{}: {f}: no crash", t.name);
    }
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: tapnet-fuzz [--seconds N] [--seed N] [--artifacts DIR] [TARGET...]\n       \
         tapnet-fuzz --repro TARGET FILE...\n       tapnet-fuzz --list"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let all = targets::all();
    let find = |name: &str| all.iter().find(|t| t.name == name);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seconds = 60u64;
    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    let mut names = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => {
                for t in &all {
                    println!("{}", t.name);
                }
                return ExitCode::SUCCESS;
            }
            "--repro" => {
                let rest: Vec<String> = it.cloned().collect();
                let Some((name, files)) = rest.split_first() else {
                    return usage();
                };
                let Some(t) = find(name) else {
                    eprintln!("no target {name}");
                    return usage();
                };
                return repro(t, files);
            }
            "--seconds" => match it.next().and_then(|s| s.parse().ok()) {
                Some(s) => seconds = s,
                None => return usage(),
            },
            "--seed" => match it.next().and_then(|s| s.parse().ok()) {
                Some(s) => seed = s,
                None => return usage(),
            },
            "--artifacts" => match it.next() {
                Some(d) => artifacts = PathBuf::from(d),
                None => return usage(),
            },
            name if find(name).is_some() => names.push(name.to_string()),
            other => {
                eprintln!("unknown argument or target: {other}");
                return usage();
            }
        }
    }
    if names.is_empty() {
        names = all.iter().map(|t| t.name.to_string()).collect();
    }
    quiet_panics();
    let mut any = false;
    for name in &names {
        let t = find(name).expect("checked");
        eprintln!("{name}: fuzzing for {seconds} s (seed {seed})");
        let o = fuzz(t, Duration::from_secs(seconds), seed, &artifacts);
        eprintln!(
            "{name}: corpus {} inputs, {} features",
            o.corpus, o.features
        );
        println!("{name}: {} execs, {} crashes", o.execs, o.crashes);
        any |= o.crashes > 0;
    }
    if any {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
