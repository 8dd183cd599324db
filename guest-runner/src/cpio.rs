//! Writing a small initramfs archive (cpio "newc", the format the kernel unpacks).
//!
//! The kernel unpacks every archive of a concatenation in turn, later entries replacing
//! earlier ones, so files are added to a built initramfs by appending an archive of them:
//! no unpacking, no root, no `cpio` binary.

use std::collections::BTreeSet;

/// Regular file mode bits (`S_IFREG`).
const S_IFREG: u32 = 0o100_000;
/// Directory mode bits (`S_IFDIR`).
const S_IFDIR: u32 = 0o040_000;

/// An archive being written: files, and the directories above them.
#[derive(Debug, Default)]
pub struct Archive {
    bytes: Vec<u8>,
    dirs: BTreeSet<String>,
    next_inode: u32,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a regular file at the absolute `path` with permission bits `mode` (e.g. 0o755),
    /// after a directory entry for each of its parents not added yet.
    ///
    /// # Panics
    ///
    /// If `path` is not absolute or names no file (ends with `/`), or the file is over
    /// 4 GiB: the callers pass fixed paths and small files.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        let name = path.strip_prefix('/').filter(|n| !n.is_empty() && !n.ends_with('/'));
        let name = name.unwrap_or_else(|| panic!("cpio: {path:?} is not an absolute file path"));
        let mut parent = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if self.dirs.insert(parent.clone()) {
                self.entry(&parent.clone(), S_IFDIR | 0o755, &[]);
            }
        }
        self.entry(name, S_IFREG | (mode & 0o7777), data);
    }

    /// The archive, closed by its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let size = u32::try_from(data.len()).unwrap_or_else(|_| panic!("cpio: {name} is over 4 GiB"));
        let name_size = u32::try_from(name.len() + 1).unwrap_or_else(|_| panic!("cpio: name too long"));
        self.next_inode += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [self.next_inode, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, name_size, 0];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    /// Pads to the format's 4-byte alignment.
    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The archive as `cpio -t` lists it, read with the system's cpio where installed
    /// (`make toolchain` installs it): an independent reader of the format.
    #[test]
    fn the_system_cpio_reads_what_is_written() {
        let mut archive = Archive::new();
        archive.file("/l2/extra/hello.txt", 0o644, b"hello\n");
        archive.file("/l2/extra/run.sh", 0o755, b"#!/bin/sh\nexit 3\n");
        archive.file("/top", 0o600, b"");
        let bytes = archive.finish();
        assert!(bytes.len().is_multiple_of(4));
        let dir = std::env::temp_dir().join(format!("mshare-cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.cpio");
        std::fs::write(&file, &bytes).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-i", "--make-directories", "--quiet", "-F"])
            .arg(&file)
            .current_dir(&dir)
            .output()
            .expect("cpio (install it with `make toolchain`)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(dir.join("l2/extra/hello.txt")).unwrap(), b"hello\n");
        assert_eq!(std::fs::read(dir.join("l2/extra/run.sh")).unwrap(), b"#!/bin/sh\nexit 3\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("l2/extra/run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(dir.join("top").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[should_panic(expected = "is not an absolute file path")]
    fn a_relative_path_is_refused() {
        Archive::new().file("relative", 0o644, b"");
    }
}
