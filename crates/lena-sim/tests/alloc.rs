//! Heap allocations per round after start-up, counted with a wrapping global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is global: tests take turns so that one's start-up is not counted in another's
/// rounds.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn allocations_per_round(algo: &str, batch: usize) -> u64 {
    allocations_per_round_of(algo, batch, 1000, 20, "logistic_ova")
}

fn allocations_per_round_of(
    algo: &str,
    batch: usize,
    samples: usize,
    features: usize,
    objective: &str,
) -> u64 {
    let text = format!(
        "[data]\nsplit = \"one_label\"\nnodes = 10\nbatch = {batch}\n[data.source]\nkind = \"synthetic\"\n\
         samples = {samples}\ntest_samples = 100\nfeatures = {features}\nclasses = 10\n\
         [model]\nobjective = \"{objective}\"\n[algorithm]\n{algo}\n\
         [run]\nthreads = 1\nseed = 1\n"
    );
    let cfg = lena_sim::ExperimentConfig::from_toml(&text, "alloc").unwrap();
    let mut sim = lena_sim::Simulation::new(cfg).unwrap();
    for _ in 0..30 {
        sim.step().unwrap();
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..20 {
        sim.step().unwrap();
    }
    (ALLOCS.load(Ordering::Relaxed) - before) / 20
}

/// The round loop allocates nothing after start-up: every buffer (gradients, messages, memory,
/// drift, model workspaces, top-k's index scratch) is sized once and reused. rand-k is the
/// exception left (its index sample), so it is not listed here.
#[test]
fn rounds_allocate_nothing_after_start_up() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    for (name, algo) in [
        ("dgd", "name = \"dgd\"\nstep_size = 0.1"),
        ("lena", "name = \"lena\"\nstep_size = 0.1"),
        ("lag_wk", "name = \"lag_wk\"\nstep_size = 0.1"),
        ("diana", "name = \"diana\"\nstep_size = 0.1"),
        ("ef_sgd", "name = \"ef_sgd\"\nstep_size = 0.1"),
        ("laq", "name = \"laq\"\nstep_size = 0.1"),
        ("lasg_wk2", "name = \"lasg_wk2\"\nstep_size = 0.1"),
        (
            "lena_topk",
            "name = \"lena\"\nstep_size = 0.1\n[algorithm.compressor]\nkind = \"top_k\"\nk = 20",
        ),
        (
            "ef_sgd_randk",
            "name = \"ef_sgd\"\nstep_size = 0.1\n[algorithm.compressor]\nkind = \"rand_k\"\nk = 20",
        ),
        (
            "lag_wk_topk",
            "name = \"lag_wk\"\nstep_size = 0.1\n[algorithm.compressor]\nkind = \"top_k\"\nk = 20",
        ),
        (
            "lena_qsgd",
            "name = \"lena\"\nstep_size = 0.1\n[algorithm.compressor]\nkind = \"qsgd\"\nlevels = 255",
        ),
    ] {
        for batch in [0, 5] {
            let n = allocations_per_round(algo, batch);
            assert_eq!(
                n, 0,
                "{name} with batch {batch} allocates {n} times per round"
            );
        }
    }
}

#[test]
fn cnn_rounds_allocate_nothing_after_start_up() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    for algo in ["name = \"dgd\"", "name = \"lena\"", "name = \"diana\""] {
        let algo = format!("{algo}\nstep_size = 0.05");
        for batch in [0, 4] {
            let n = allocations_per_round_of(&algo, batch, 200, 784, "cnn");
            assert_eq!(
                n, 0,
                "CNN {algo} with batch {batch} allocates {n} times per round"
            );
        }
    }
}
