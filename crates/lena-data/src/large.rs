//! Room for large arrays (a dataset's features), asked of the kernel in huge pages.

/// Below this many bytes a vector is left to the allocator as it is.
const LARGE: usize = 4 << 20;

/// An empty vector with room for `cap` values. Where the room is large, on Linux, the kernel is
/// asked to back it with transparent huge pages (`madvise(MADV_HUGEPAGE)`, before any of it is
/// touched): a hint, with no effect on any value.
///
/// PERF: MNIST's 188 MB of features fault in as 47 000 pages of 4 KiB (each a trap, a zeroing
/// and a page-table update): about a third of a short run's start-up, twice over (the loaded
/// set and the nodes' copies). In 2 MiB pages they are 94 faults, and a pass over the rows
/// misses the TLB 512 times less often.
pub(crate) fn vec_with_capacity<T>(cap: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(cap);
    let bytes = cap.saturating_mul(size_of::<T>());
    if bytes >= LARGE {
        advise_huge(v.as_ptr().cast(), bytes);
    }
    v
}

#[cfg(target_os = "linux")]
fn advise_huge(start: *const u8, bytes: usize) {
    // madvise wants a page-aligned start: the whole pages inside the allocation.
    let page = 4096;
    let first = (start as usize).next_multiple_of(page);
    let end = (start as usize + bytes) / page * page;
    if end > first {
        // SAFETY: the range is whole pages inside one live allocation of ours that nothing has
        // touched yet; MADV_HUGEPAGE changes how the kernel backs those pages, never their
        // contents or their mapping. A failure (e.g. a kernel without transparent huge pages)
        // leaves the pages as they were, so its result is ignored.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_start: *const u8, _bytes: usize) {}

#[cfg(test)]
mod tests {
    #[test]
    fn large_and_small_vectors_hold_what_is_put_in() {
        for cap in [0, 10, (super::LARGE / 4) + 3] {
            let mut v: Vec<f32> = super::vec_with_capacity(cap);
            assert!(v.capacity() >= cap);
            v.extend((0..cap).map(|i| i as f32));
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
        }
    }
}
