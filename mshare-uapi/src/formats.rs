//! Formats the host tools and the guest programs share, defined once: sizes with binary
//! suffixes (`512M`), the `Name:   N kB` lines of /proc, and the vendor capability through
//! which mshare-vmm names an ivshmem device's region. (The kernel module reads the same
//! capability in its own Rust, guest-kmod/ivshmem.rs; its layout is the one below.)

use std::collections::BTreeMap;

/// Parses a size in bytes: `65536`, `4k`, `512M`, `1G` (binary K/M/G, case-insensitive,
/// surrounding blanks ignored); `None` when it is not one or overflows.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 10),
        (i, 'm' | 'M') => (&text[..i], 20),
        (i, 'g' | 'G') => (&text[..i], 30),
        _ => (text, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// The `Name:   N kB` lines of a /proc file (meminfo, status, smaps_rollup): name -> KiB.
/// Lines of any other shape are left out.
pub fn kib_lines(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let kib = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some((name.trim().to_owned(), kib))
        })
        .collect()
}

/// Why a word of a guest command cannot go on the kernel command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandWordError {
    /// A bare `--`: the kernel gives /init only the words after the first one and drops
    /// everything from a second on.
    DoubleDash,
    /// A double quote or a newline, which the kernel's argument parser cannot carry.
    Unquotable,
}

/// A word of the guest command as the kernel command line carries it to the guest's /init
/// (after `--`): as it is, or in double quotes when it is empty or has blanks.
pub fn guest_command_word(word: &str) -> Result<String, CommandWordError> {
    if word == "--" {
        return Err(CommandWordError::DoubleDash);
    }
    if word.contains(['"', '\n']) {
        return Err(CommandWordError::Unquotable);
    }
    Ok(if word.is_empty() || word.contains(char::is_whitespace) { format!("\"{word}\"") } else { word.to_owned() })
}

/// mshare-vmm's ivshmem capability: in the device's PCI configuration space, a vendor
/// capability `[0x09, next, length, 'M', 'S', version 1, flags, name bytes..., 0]`, flags
/// bit 0 set when the VM attached the region read-only. QEMU's devices have none.
pub mod ivshmem_capability {
    /// QEMU's ivshmem vendor ID (Red Hat / Qumranet).
    pub const VENDOR_ID: u16 = 0x1af4;
    /// The ivshmem device ID.
    pub const DEVICE_ID: u16 = 0x1110;
    /// The PCI capability ID of vendor-specific capabilities.
    pub const CAP_ID: u8 = 0x09;
    /// The signature after the length byte.
    pub const SIGNATURE: [u8; 2] = *b"MS";
    /// The layout's version.
    pub const VERSION: u8 = 1;
    /// Flags bit: attached read-only.
    pub const FLAG_READ_ONLY: u8 = 1;
    /// Bytes before the name: ID, next, length, signature, version, flags.
    pub const NAME_OFFSET: usize = 7;
    const CONFIG_STATUS: usize = 6;
    const STATUS_CAPABILITIES: u16 = 1 << 4;
    const CAPABILITIES_POINTER: usize = 0x34;

    /// The capability's body after its ID and next pointer: length, signature, version,
    /// flags, the name and its terminating zero.
    pub fn body(name: &str, read_only: bool) -> Vec<u8> {
        let mut body = vec![0u8, SIGNATURE[0], SIGNATURE[1], VERSION, if read_only { FLAG_READ_ONLY } else { 0 }];
        body.extend(name.as_bytes());
        body.push(0);
        body[0] = (2 + body.len()) as u8;
        body
    }

    /// The region name and access in a configuration space (`config`, as sysfs's `config`
    /// file gives it), walking its capability list; `None` without the capability.
    pub fn read(config: &[u8]) -> Option<(String, bool)> {
        let status = u16::from_le_bytes([*config.get(CONFIG_STATUS)?, *config.get(CONFIG_STATUS + 1)?]);
        if status & STATUS_CAPABILITIES == 0 {
            return None;
        }
        let mut at = usize::from(*config.get(CAPABILITIES_POINTER)? & !3);
        // A list longer than the configuration space has room for is corrupt.
        for _ in 0..48 {
            if at < 0x40 || at + 3 > config.len() {
                return None;
            }
            let (id, next, len) = (config[at], config[at + 1], usize::from(config[at + 2]));
            if id == CAP_ID && len > NAME_OFFSET && config.get(at + 3..at + 5) == Some(SIGNATURE.as_slice()) {
                let body = config.get(at + NAME_OFFSET..at + len)?;
                let name: Vec<u8> = body.iter().copied().take_while(|b| *b != 0).collect();
                let read_only = config[at + 6] & FLAG_READ_ONLY != 0;
                return Some((String::from_utf8_lossy(&name).into_owned(), read_only));
            }
            at = usize::from(next & !3);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_binary_suffixes() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size(" 512M "), Some(512 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999G"), None, "overflow");
    }

    #[test]
    fn guest_command_words() {
        assert_eq!(guest_command_word("mshare-api"), Ok("mshare-api".to_owned()));
        assert_eq!(guest_command_word("exit 3"), Ok("\"exit 3\"".to_owned()));
        assert_eq!(guest_command_word(""), Ok("\"\"".to_owned()));
        assert_eq!(guest_command_word("--"), Err(CommandWordError::DoubleDash));
        assert_eq!(guest_command_word("say \"hi\""), Err(CommandWordError::Unquotable));
        assert_eq!(guest_command_word("a\nb"), Err(CommandWordError::Unquotable));
    }

    #[test]
    fn kib_lines_of_proc_files() {
        let text =
            "55a4-7ffd ---p 00000000 00:00 0   [rollup]\nRss:               28672 kB\nVmPTE:\t  12 kB\nThreads: 1\n";
        let lines = kib_lines(text);
        assert_eq!((lines.get("Rss"), lines.get("VmPTE")), (Some(&28672), Some(&12)));
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn the_capability_reads_back_what_was_written() {
        let body = ivshmem_capability::body("db", true);
        assert_eq!(body, vec![10, b'M', b'S', 1, 1, b'd', b'b', 0]);
        let mut config = vec![0u8; 256];
        config[6] = 1 << 4;
        config[0x34] = 0x40;
        config[0x40] = ivshmem_capability::CAP_ID;
        config[0x42..0x42 + body.len()].copy_from_slice(&body);
        assert_eq!(ivshmem_capability::read(&config), Some(("db".to_owned(), true)));
        config[0x43] = b'X';
        assert_eq!(ivshmem_capability::read(&config), None, "another vendor's capability");
        assert_eq!(ivshmem_capability::read(&[0u8; 256]), None, "no capabilities at all");
    }

    #[test]
    fn a_corrupt_capability_list_ends() {
        let mut config = vec![0u8; 256];
        config[6] = 1 << 4;
        config[0x34] = 0x40;
        // A vendor capability of someone else pointing at itself: the walk gives up.
        config[0x40..0x44].copy_from_slice(&[ivshmem_capability::CAP_ID, 0x40, 8, b'Q']);
        assert_eq!(ivshmem_capability::read(&config), None);
        // Ours, with a length running past the configuration space.
        config[0x40..0x48].copy_from_slice(&[ivshmem_capability::CAP_ID, 0, 250, b'M', b'S', 1, 0, b'x']);
        assert_eq!(ivshmem_capability::read(&config[..0x80]), None);
    }
}
