//! `--region` specs and sizes: parsed or refused with a one-line error, never a panic; a
//! parsed spec printed back (`to_flag`) parses to the same region and attachment, and a
//! parsed size reads back the same in bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::config::parse_size;
use vmm::regions::RegionSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match RegionSpec::parse_flag(text) {
        Ok((region, attach)) => {
            let printed = region.to_flag(&attach);
            assert_eq!(RegionSpec::parse_flag(&printed), Ok((region, attach)), "{text:?} printed as {printed:?}");
        }
        Err(e) => assert_eq!(e.to_string().lines().count(), 1, "{e}"),
    }
    if let Ok(size) = parse_size(text) {
        assert_eq!(parse_size(&size.to_string()).ok(), Some(size), "{text:?} does not round-trip");
    }
});
