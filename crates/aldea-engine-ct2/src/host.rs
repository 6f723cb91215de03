//! The CTranslate2 runtime's memory seen from Rust, for what `ct2rs` does not offer: reading a
//! float32 CPU `StorageView` (through the C++ shim `shim.cc`, built by `build.rs`) and a view
//! over a buffer that the view's owner keeps alive. The only unsafe code of the workspace.

use std::ffi::{c_int, c_void};
use std::mem::ManuallyDrop;

use ct2rs::sys;

unsafe extern "C" {
    fn aldea_ct2_copy_f32(view: *const c_void, out: *mut f32, len: usize) -> c_int;
}

/// The `len` values of a float32 storage view on the CPU.
pub(crate) fn copy_to_host(view: &sys::StorageView<'_>, len: usize) -> Result<Vec<f32>, String> {
    let mut out = vec![0.0f32; len];
    let raw = std::ptr::from_ref(&**view).cast::<c_void>();
    // SAFETY: `raw` is the address of the C++ StorageView that `view` owns and keeps alive for this
    // call (cxx references point at the C++ object itself). The shim only reads it, checks that it
    // holds exactly `len` float32 values on the CPU, and writes at most `len` floats to `out`.
    let code = unsafe { aldea_ct2_copy_f32(raw, out.as_mut_ptr(), len) };
    match code {
        0 => Ok(out),
        1 => Err("the storage is not on the CPU".to_owned()),
        2 => Err("the storage is not float32".to_owned()),
        3 => Err(format!("the storage does not hold {len} values")),
        _ => Err("reading the storage failed".to_owned()),
    }
}

/// A storage view over host memory it owns (`ct2rs` views borrow their buffer from the caller).
pub(crate) struct HostView {
    /// Points into `buffer`; dropped first (see `Drop`).
    view: ManuallyDrop<sys::StorageView<'static>>,
    /// From `Box::into_raw`; freed in `Drop` after the view.
    buffer: *mut [f32],
}

impl HostView {
    pub(crate) fn new(shape: &[usize], data: Vec<f32>) -> Result<HostView, String> {
        let buffer = Box::into_raw(data.into_boxed_slice());
        // SAFETY: `buffer` is a live allocation from `Box::into_raw` that only this value reaches; it
        // is freed in `Drop` after the view borrowing it, and nothing writes to it meanwhile.
        let slice: &'static mut [f32] = unsafe { &mut *buffer };
        match sys::StorageView::new(shape, slice, sys::Device::CPU) {
            Ok(view) => Ok(HostView { view: ManuallyDrop::new(view), buffer }),
            Err(e) => {
                // SAFETY: no view was made, so nothing borrows `buffer` any more; it is freed once.
                drop(unsafe { Box::from_raw(buffer) });
                Err(e.to_string())
            }
        }
    }

    pub(crate) fn view(&self) -> &sys::StorageView<'static> {
        &self.view
    }
}

impl Drop for HostView {
    fn drop(&mut self) {
        // SAFETY: the view is dropped exactly once, here, before the buffer it points into; the
        // buffer came from `Box::into_raw` and is freed exactly once.
        unsafe {
            ManuallyDrop::drop(&mut self.view);
            drop(Box::from_raw(self.buffer));
        }
    }
}

// SAFETY: a `HostView` owns its buffer exclusively and the runtime only reads it through the view;
// `sys::StorageView` itself is `Send + Sync`.
unsafe impl Send for HostView {}
// SAFETY: as above: shared access only reads.
unsafe impl Sync for HostView {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_view_reads_back_what_it_was_given() {
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        let view = HostView::new(&[2, 3, 4], data.clone()).unwrap();
        assert_eq!(view.view().size(), 24);
        assert_eq!(copy_to_host(view.view(), 24).unwrap(), data);
        assert!(copy_to_host(view.view(), 23).is_err(), "a wrong length is refused, not read past");
    }
}
