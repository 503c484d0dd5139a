//! Independent `lena` runs a few at a time: a figure's runs share nothing but the binary and
//! the data files, and a run's results do not depend on its thread count (the simulator pins
//! this), so `--jobs N` runs N of them at once with `cores / N` threads each. Two one-thread
//! runs on two cores finish sooner than the same runs one after the other on two threads: a
//! run's start (the dataset read and converted), its evaluations' serial parts and its
//! server's reductions leave a core idle that the other run fills.

use anyhow::Result;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

static JOBS: OnceLock<usize> = OnceLock::new();

/// The machine's cores (1 where the count cannot be read).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sets how many runs go at once (0: one per core). Call once, before any run.
pub fn set_jobs(n: usize) {
    let n = if n == 0 { cores() } else { n };
    let _ = JOBS.set(n);
}

/// Runs at once (one per core unless `set_jobs` said otherwise).
pub fn jobs() -> usize {
    *JOBS.get_or_init(cores)
}

/// `f` over `items`, `jobs()` of them at once (fewer if there are fewer items), each call
/// typically one `lena` process that gets the threads passed with its item: the cores shared
/// among the calls at once, at least one. Results in the items' order. After a failure no
/// further item starts, and the first failure in item order is returned once the running ones
/// have finished.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T, usize) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let at_once = jobs().min(items.len()).max(1);
    let threads = (cores() / at_once).max(1);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Mutex<Vec<Option<Result<R>>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..at_once {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item, threads);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    slots.lock().expect("no panic holds the lock")[i] = Some(r);
                }
            });
        }
    });
    let slots = slots.into_inner().expect("no panic holds the lock");
    let mut out = Vec::with_capacity(items.len());
    for r in slots {
        match r {
            Some(r) => out.push(r?),
            // Never started: only after a failure, whose error (earlier in the order) returned.
            None => anyhow::bail!("a run was skipped without an earlier failure"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_items_order_and_the_first_failure_wins() {
        set_jobs(3);
        let items: Vec<u64> = (0..20).collect();
        let out = map(&items, |&i, _| {
            std::thread::sleep(std::time::Duration::from_millis((20 - i) % 7));
            Ok(i * i)
        })
        .unwrap();
        assert_eq!(out, items.iter().map(|i| i * i).collect::<Vec<_>>());
        let err = map(&items, |&i, _| {
            if i == 4 || i == 9 {
                anyhow::bail!("item {i} failed")
            }
            Ok(i)
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "item 4 failed");
    }
}
