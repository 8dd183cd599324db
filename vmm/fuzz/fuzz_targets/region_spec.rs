//! `--region` specs and sizes: parsed or refused, never a panic; a parsed spec attaches
//! the region it describes, and a parsed size reads back the same in bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::config::parse_size;
use vmm::regions::RegionSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok((region, attach)) = RegionSpec::parse_flag(text) {
        assert_eq!(region.name, attach.region);
    }
    if let Ok(size) = parse_size(text) {
        assert_eq!(parse_size(&size.to_string()).ok(), Some(size), "{text:?} does not round-trip");
    }
});
