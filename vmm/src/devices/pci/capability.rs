//! The capability list: how a device tells the guest about features the fixed header has
//! no field for (ivshmem's region name and size ride in a vendor-specific one). Bounded by
//! the 256-byte configuration space, so a capability that does not fit is an error rather
//! than a write past the registers.

use crate::devices::pci::config_space::{ConfigSpace, CONFIG_SPACE_SIZE, REG_COMMAND};

const REG_CAPABILITIES: usize = 13;
const STATUS_CAPABILITIES: u32 = 1 << 20;
/// Where the list starts: the first byte after the type-0 header.
pub(super) const FIRST_CAPABILITY: usize = 0x40;

/// A capability that does not fit in the configuration space.
#[derive(Debug, thiserror::Error)]
#[error(
    "PCI capability {id:#04x} of {len} bytes at {offset:#x} runs past the {CONFIG_SPACE_SIZE}-byte configuration space"
)]
pub struct CapabilityError {
    id: u8,
    len: usize,
    offset: usize,
}

impl ConfigSpace {
    /// Appends a capability `id` with `body` to the list; returns its offset. Refuses one
    /// that would run past the 256-byte configuration space (changing nothing).
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<usize, CapabilityError> {
        let offset = self.next_capability;
        let len = 2 + body.len();
        if offset + len > CONFIG_SPACE_SIZE {
            return Err(CapabilityError { id, len, offset });
        }
        let mut bytes = vec![id, 0];
        bytes.extend_from_slice(body);
        for (i, b) in bytes.iter().enumerate() {
            self.set_byte(offset + i, *b);
        }
        if offset == FIRST_CAPABILITY {
            // The pointer register is zero until now (read-only to the guest, set nowhere
            // else), so setting its bits stores the pointer.
            self.set_bits(REG_CAPABILITIES, FIRST_CAPABILITY as u32);
            self.set_bits(REG_COMMAND, STATUS_CAPABILITIES);
        } else {
            // Link the previous capability, whose next pointer is the last one still zero.
            let mut prev = FIRST_CAPABILITY;
            while self.byte(prev + 1) != 0 {
                prev = usize::from(self.byte(prev + 1));
            }
            self.set_byte(prev + 1, offset as u8);
        }
        self.next_capability = (offset + len + 3) & !3;
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_chained() {
        let mut config = ConfigSpace::new(1, 2, 3, 4, 5);
        assert_eq!(config.add_capability(0x09, &[5, b'a', b'b']).unwrap(), 0x40);
        assert_eq!(config.add_capability(0x09, &[3]).unwrap(), 0x48);
        assert_ne!(config.read(1) & STATUS_CAPABILITIES, 0);
        assert_eq!(config.read(13), 0x40);
        assert_eq!(config.read(0x40 / 4) & 0xffff, 0x4809);
        assert_eq!(config.read(0x48 / 4) & 0xffff, 0x0009);
    }

    #[test]
    fn a_capability_past_the_configuration_space_is_refused() {
        let mut config = ConfigSpace::new(1, 2, 3, 4, 5);
        assert_eq!(config.add_capability(0x09, &[0; 100]).unwrap(), 0x40);
        // 0xa8 + 2 + 86 = 256: the last byte fits.
        assert_eq!(config.add_capability(0x09, &[0; 86]).unwrap(), 0xa8);
        let before = (0..64).map(|r| config.read(r)).collect::<Vec<_>>();
        let err = config.add_capability(0x09, &[0; 1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PCI capability 0x09 of 3 bytes at 0x100 runs past the 256-byte configuration space"
        );
        assert_eq!((0..64).map(|r| config.read(r)).collect::<Vec<_>>(), before);
    }
}
