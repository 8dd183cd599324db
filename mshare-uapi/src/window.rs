//! A mapping of a region in this process.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `len` bytes of a region mapped shared at `ptr`, unmapped when dropped. Other processes
/// may write the same memory at any time, so it is read and written by copies, never
/// lent out as a slice.
#[derive(Debug)]
pub struct Window {
    ptr: *mut u8,
    len: usize,
}

impl Window {
    /// Maps `[offset, offset + len)` of the region open as `file` (`mmap(2)`, `MAP_SHARED`),
    /// read-write unless `read_only`.
    pub fn map(file: &File, len: usize, offset: u64, read_only: bool) -> io::Result<Self> {
        let prot = if read_only { libc::PROT_READ } else { libc::PROT_READ | libc::PROT_WRITE };
        let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh shared mapping chosen by the kernel, checked for MAP_FAILED.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, file.as_raw_fd(), offset) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr: ptr.cast(), len })
    }

    /// Takes ownership of a mapping made elsewhere (`/dev/mshare`'s attach).
    ///
    /// # Safety
    ///
    /// `[ptr, ptr + len)` is a mapping of this process that nothing else unmaps.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> Self {
        Self { ptr, len }
    }

    /// Where it is mapped.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never, for a mapping the kernel made).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`. Touching a hole of the region
    /// raises SIGSEGV, as any access to it does.
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        assert!(offset.checked_add(buf.len()).is_some_and(|end| end <= self.len), "read past the window");
        // SAFETY: inside the mapping, checked above; `buf` is a separate allocation.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), buf.as_mut_ptr(), buf.len()) };
    }

    /// Copies `data` to `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) {
        assert!(offset.checked_add(data.len()).is_some_and(|end| end <= self.len), "write past the window");
        // SAFETY: inside the mapping, checked above; `data` is a separate allocation.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset), data.len()) };
    }

    /// Gives the mapping up without unmapping it (`/dev/mshare`'s detach unmaps it).
    pub fn into_raw(self) -> (*mut u8, usize) {
        let raw = (self.ptr, self.len);
        std::mem::forget(self);
        raw
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: the mapping this value owns.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
