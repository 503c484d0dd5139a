//! Per-thread buffers: vectors a node computes and uses within one round, so they are not node
//! state (they stay in cache from node to node instead of being streamed per node).

thread_local! {
    static GRADIENT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's gradient buffer of length `dim`.
///
/// PERF: a gradient that lives only for the round goes into a per-thread buffer that stays in
/// cache, instead of one per node (6 MB less state to stream at M = 200, d = 7850).
pub(crate) fn with_gradient_buffer<R>(dim: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffers(dim, |[g]| f(g))
}

/// Runs `f` with `N` per-thread buffers of length `dim` (the first is the gradient buffer):
/// vectors a node computes and uses within one round, so they are not node state.
pub(crate) fn with_buffers<const N: usize, R>(
    dim: usize,
    f: impl FnOnce([&mut [f32]; N]) -> R,
) -> R {
    GRADIENT.with_borrow_mut(|g| {
        g.resize(N * dim, 0.0);
        let mut parts = g.chunks_mut(dim.max(1));
        f(std::array::from_fn(|_| parts.next().unwrap_or_default()))
    })
}

thread_local! {
    static LEVELS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's vector in `key`, at length `dim`.
fn with_thread_vector<T: Clone + Default + 'static, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>,
    dim: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    key.with_borrow_mut(|v| {
        v.resize(dim, T::default());
        f(&mut v[..dim])
    })
}

/// Runs `f` with this thread's integer buffer of length `dim` (quantization levels).
pub(crate) fn with_levels_buffer<R>(dim: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    with_thread_vector(&LEVELS, dim, f)
}

thread_local! {
    static SPARE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Takes this thread's spare vector, of length `dim`: a kernel writes a candidate for a
/// node's state into it, and the node swaps it in or gives it back with
/// [`give_back_spare_vector`]. Allocates only on a thread's first use (or a new `dim`).
pub(crate) fn take_spare_vector(dim: usize) -> Vec<f32> {
    let mut v = SPARE.with_borrow_mut(std::mem::take);
    v.resize(dim, 0.0);
    v
}

/// Returns a vector (the spare, or the node state it replaced) to this thread for the next
/// [`take_spare_vector`].
pub(crate) fn give_back_spare_vector(v: Vec<f32>) {
    SPARE.with_borrow_mut(|s| *s = v);
}

thread_local! {
    static SPARE_MESSAGE: std::cell::RefCell<crate::Message> =
        std::cell::RefCell::new(crate::Message::default());
}

/// Takes this thread's spare message: a node encodes a candidate upload into it and swaps it
/// with its own message if it uploads (the node's old message becomes the spare), then gives
/// it back with [`give_back_spare_message`]. Its contents are never read before they are
/// written: what it held before is whatever a node of this thread last left in it.
pub(crate) fn take_spare_message() -> crate::Message {
    SPARE_MESSAGE.with_borrow_mut(std::mem::take)
}

/// Returns a message (the spare, or the upload it replaced) to this thread for the next
/// [`take_spare_message`].
pub(crate) fn give_back_spare_message(m: crate::Message) {
    SPARE_MESSAGE.with_borrow_mut(|s| *s = m);
}

/// Computes `oracle`'s gradient at `w` straight into `next` as a dense upload (see
/// [`take_spare_message`]) and returns it: read in place, or decoded into `g_buf` where the
/// platform cannot view the message's bytes as f32s.
pub(crate) fn gradient_into_message<'a>(
    oracle: &mut dyn crate::GradientOracle,
    w: &[f32],
    next: &'a mut crate::Message,
    g_buf: &'a mut [f32],
) -> &'a [f32] {
    let n = w.len();
    let mut unaligned = Vec::new();
    lena_compress::dense::encode_with(next, n, &mut unaligned, |g| oracle.gradient(w, g));
    match lena_compress::dense::view_at(next, 0, n) {
        Some(g) => g,
        None => {
            lena_compress::dense::decode_at(next, 0, g_buf);
            g_buf
        }
    }
}
