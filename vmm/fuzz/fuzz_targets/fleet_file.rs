//! Fleet files: any text is a fleet or one error line that names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vmm::fleet::Fleet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Fleet::parse(Path::new("/fuzz/fleet.toml"), text) {
        let msg = e.to_string();
        assert!(msg.starts_with("/fuzz/fleet.toml: "), "{msg:?}");
        assert_eq!(msg.lines().count(), 1, "{msg:?}");
    }
});
