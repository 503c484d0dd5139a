//! A global allocator that starts every large block on a cache line.

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, with every block of at least [`LineAligned::MIN_SIZE`] bytes placed on
/// a 64-byte boundary (a cache line, one AVX-512 vector); smaller blocks as the system places
/// them.
///
/// The kernels run their lanes from a slice's first element wherever it lies, so alignment
/// never changes a float; it changes only how many loads straddle two lines. The system
/// allocator puts a node's state vectors 16 bytes past a line, so on the AVX-512 path every
/// 64-byte load of them reads two lines. On an Intel Xeon (family 6 model 207) LENA-m's node
/// scan at M = 200, its state in L3, ran about 20% faster on line-aligned vectors (see
/// docs/PERFORMANCE.md).
///
/// The system's `calloc` takes no alignment, so a zeroed block of 4 KiB or more is zeroed by
/// writing it: a huge zeroed block never written in full holds all its memory at once.
///
/// The `lena` binary and the benches use it; a program that runs simulations itself can too:
/// ```
/// #[global_allocator]
/// static ALLOC: lena_kernels::LineAligned = lena_kernels::LineAligned;
/// let v = vec![0.0f32; 7850];
/// assert!((v.as_ptr() as usize).is_multiple_of(64));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct LineAligned;

impl LineAligned {
    /// Blocks of at least this many bytes start on a 64-byte boundary.
    pub const MIN_SIZE: usize = 4096;
    /// Their alignment: a cache line.
    pub const LINE: usize = 64;

    /// The layout the system is asked for in place of `layout`.
    fn placed(layout: Layout) -> Layout {
        if layout.size() >= Self::MIN_SIZE && layout.align() < Self::LINE {
            // A power of two, and a size that fits isize (the caller's layout's) rounded up to
            // a multiple of 64 fits it too unless within 64 of isize::MAX: then keep the caller's.
            Layout::from_size_align(layout.size(), Self::LINE).unwrap_or(layout)
        } else {
            layout
        }
    }
}

// SAFETY: every block comes from `System` with a layout whose size is the caller's and whose
// alignment is at least the caller's, and goes back to `System` with that same layout
// (`placed` is a function of the caller's layout alone).
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `placed` keeps the caller's nonzero size.
        unsafe { System.alloc(Self::placed(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(Self::placed(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with `layout`, so from `System` with `placed(layout)`.
        unsafe { System.dealloc(ptr, Self::placed(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, new) = (
            Self::placed(layout),
            Layout::from_size_align(new_size, layout.align()).map(Self::placed),
        );
        match new {
            // The same alignment either side of the move: the system's own realloc, which
            // keeps an alignment above its minimum by moving the block itself.
            // SAFETY: `ptr` is `System`'s block of layout `old`, `new_size` is nonzero (the
            // caller's contract).
            Ok(new) if new.align() == old.align() => unsafe { System.realloc(ptr, old, new_size) },
            // Across `MIN_SIZE`: a new block, the common bytes copied, the old block freed.
            Ok(new) => {
                // SAFETY: `new` has the caller's nonzero size.
                let moved = unsafe { System.alloc(new) };
                if !moved.is_null() {
                    // SAFETY: both blocks hold at least the smaller size and do not overlap;
                    // `ptr` is `System`'s block of layout `old`.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        System.dealloc(ptr, old);
                    }
                }
                moved
            }
            // A size too large for any layout: no block (the caller's contract allows this).
            Err(_) => std::ptr::null_mut(),
        }
    }
}
