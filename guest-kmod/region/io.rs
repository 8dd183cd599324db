// SPDX-License-Identifier: GPL-2.0

//! read(2) and write(2) of a region (`msharefs.rs` bounces user memory through a kernel
//! buffer): copies through the kernel's view of each piece of memory, under the memory
//! lock held shared, so UNMAP waits and faults and other copies do not.

use super::{Contents, Kind, Region};
use crate::GRANULE_SIZE;
use kernel::prelude::*;

impl Region {
    /// Calls `copy(address, at, len)` for each piece of `[offset, offset + len)` of
    /// `contents` that is contiguous in the kernel's view (a granule of a chunk or a
    /// device, a page of a file), with the piece's kernel address (`None`: a hole). The
    /// range must be inside the region.
    fn each_piece(
        &self,
        contents: &Contents,
        offset: u64,
        len: usize,
        mut copy: impl FnMut(Option<*mut u8>, usize, usize),
    ) -> Result {
        contents.check_present()?;
        let end = offset.checked_add(len as u64).ok_or(EINVAL)?;
        if end > contents.size {
            return Err(EINVAL);
        }
        let mut done = 0;
        while done < len {
            let at = offset + done as u64;
            let (index, within) = ((at / GRANULE_SIZE) as usize, (at % GRANULE_SIZE) as usize);
            let device_base = match self.kind {
                Kind::Device { base, .. } if base != 0 => Some(base + index * GRANULE_SIZE as usize),
                _ => None,
            };
            let piece = contents.memory.get(index).and_then(|memory| memory.address(within, device_base));
            let n = (len - done).min(piece.map_or(GRANULE_SIZE as usize - within, |(_, room)| room));
            // SAFETY (for the callers' copies): the address has `room >= n` bytes of the
            // granule's memory, alive while the caller holds the memory lock.
            copy(piece.map(|(address, _)| address), done, n);
            done += n;
        }
        Ok(())
    }

    /// Copies `out.len()` bytes from `offset` (inside the region) into `out`; a hole reads
    /// as zeros.
    pub(crate) fn read_at(&self, offset: u64, out: &mut [u8]) -> Result {
        let contents = self.contents.read();
        self.each_piece(&contents, offset, out.len(), |address, done, n| match address {
            // SAFETY: `address` has `n` readable bytes (see `each_piece`), kept alive by the
            // memory lock; `out[done..done + n]` is ours. Processes writing through their
            // mappings meanwhile only mix old and new bytes.
            Some(address) => unsafe { core::ptr::copy_nonoverlapping(address, out[done..].as_mut_ptr(), n) },
            None => out[done..done + n].fill(0),
        })
    }

    /// Copies `data` to `offset` (inside the region): EIO if any of it falls in a hole
    /// (a write gives no memory: nothing is written then), or the refusal of
    /// [`Contents::check_write`]. The check and the copy are under one hold of the lock.
    pub(crate) fn write_at(&self, offset: u64, data: &[u8]) -> Result {
        let contents = self.contents.read();
        self.check_write(&contents)?;
        let mut hole = false;
        self.each_piece(&contents, offset, data.len(), |address, _, _| hole |= address.is_none())?;
        if hole {
            return Err(EIO);
        }
        self.each_piece(&contents, offset, data.len(), |address, done, n| {
            if let Some(address) = address {
                // SAFETY: as in `read_at`, `address` has `n` writable bytes.
                unsafe { core::ptr::copy_nonoverlapping(data[done..].as_ptr(), address, n) };
            }
        })
    }
}
