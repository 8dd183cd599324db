//! The kernel module's copy of the ioctl ABI (guest-kmod, in-kernel Rust, which cannot use
//! this crate) encodes the same request numbers as this crate, and so as include/mshare.h
//! (checked against the crate by c_header.rs): every `const NAME: u32 = _IOx::<T>(b'x' as
//! u32, NR)` of the module's sources is read, encoded the way the kernel's macros do, and
//! compared.

use mshare_uapi::device::*;
use mshare_uapi::msharefs::{self, *};
use std::collections::BTreeMap;
use std::path::Path;

/// `_IO`, `_IOW`, `_IOR`, `_IOWR` as <linux/ioctl.h> encodes them.
fn encode(macro_name: &str, size: u64, nr: u64) -> u64 {
    let dir = match macro_name {
        "_IO" => 0,
        "_IOW" => 1,
        "_IOR" => 2,
        "_IOWR" => 3,
        other => panic!("unknown ioctl macro {other}"),
    };
    (dir << 30) | (size << 16) | (u64::from(b'x') << 8) | nr
}

/// The sizes the module gives its argument structures: the `Name: size` pairs of the
/// `plain_data!` list in guest-kmod/uapi.rs (each pinned there by a const assertion).
fn module_sizes() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-kmod/uapi.rs")).unwrap();
    let list = text.split("plain_data!(").nth(1).and_then(|rest| rest.split(");").next()).expect("plain_data! list");
    list.split(',')
        .filter_map(|pair| pair.split_once(':'))
        .map(|(name, size)| (name.trim().to_owned(), size.trim().parse().expect("a size")))
        .collect()
}

/// The size of the module's argument type: a plain integer or one of its structures.
fn size_of_type(ty: &str, sizes: &BTreeMap<String, u64>) -> u64 {
    match ty {
        "u64" => 8,
        name => *sizes.get(name).unwrap_or_else(|| panic!("the module's argument type {name} has no size in uapi.rs")),
    }
}

#[test]
fn the_modules_structures_are_the_crates_size() {
    use std::mem::size_of;
    let crate_sizes: BTreeMap<&str, usize> = [
        ("MshareInfo", size_of::<MshareInfo>()),
        ("MshareCreate", size_of::<MshareCreate>()),
        ("MshareUnmap", size_of::<[u64; 2]>()),
        ("MshareStats", size_of::<MshareStats>()),
        ("MshareAttach", size_of::<MshareAttach>()),
        ("MshareDetach", size_of::<MshareDetach>()),
        ("MshareMap", size_of::<MshareMap>()),
        ("MshareRange", size_of::<MshareRange>()),
        ("MshareProtect", size_of::<MshareProtect>()),
    ]
    .into_iter()
    .collect();
    let module = module_sizes();
    assert_eq!(module.keys().map(String::as_str).collect::<Vec<_>>(), crate_sizes.keys().copied().collect::<Vec<_>>());
    for (name, size) in &module {
        assert_eq!(*size, crate_sizes[name.as_str()] as u64, "{name}: the module's size differs from the crate's");
    }
}

/// Every ioctl constant the module's sources define: name -> request number.
fn module_requests() -> BTreeMap<String, u64> {
    let sizes = module_sizes();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-kmod");
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let Some((name, value)) =
                line.trim().strip_prefix("pub(crate) const ").and_then(|l| l.split_once(": u32 = "))
            else {
                continue;
            };
            let Some(call) = value.strip_suffix(';').filter(|v| v.starts_with("_IO")) else { continue };
            let (head, args) = call.split_once('(').unwrap();
            let (macro_name, ty) = match head.split_once("::<") {
                Some((m, t)) => (m, t.strip_suffix('>').unwrap()),
                None => (head, ""),
            };
            let nr = args.trim_end_matches(')').rsplit(", ").next().unwrap();
            let nr = match nr.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
                None => nr.parse().unwrap(),
            };
            let size = if ty.is_empty() { 0 } else { size_of_type(ty, &sizes) };
            found.insert(name.to_owned(), encode(macro_name, size, nr));
        }
    }
    found
}

#[test]
fn the_modules_request_numbers_are_the_crates() {
    let expected: BTreeMap<&str, u64> = [
        ("V1_GET_SIZE", MSHAREFS_GET_SIZE),
        ("V1_SET_SIZE", MSHAREFS_SET_SIZE),
        ("V1_CREATE_MAPPING", MSHAREFS_CREATE_MAPPING),
        ("V1_UNMAP", MSHAREFS_UNMAP),
        ("V3_CREATE_MAPPING", msharefs::v3::MSHAREFS_CREATE_MAPPING),
        ("V3_UNMAP", msharefs::v3::MSHAREFS_UNMAP),
        ("GET_STATS", MSHAREFS_GET_STATS),
        ("SET_PROT", MSHAREFS_SET_PROT),
        ("MSHARE_CREATE", MSHARE_CREATE),
        ("MSHARE_ATTACH", MSHARE_ATTACH),
        ("MSHARE_DETACH", MSHARE_DETACH),
        ("MSHARE_MAP", MSHARE_MAP),
        ("MSHARE_UNMAP", MSHARE_UNMAP),
        ("MSHARE_PROTECT", MSHARE_PROTECT),
    ]
    .into_iter()
    .collect();
    let module = module_requests();
    let names: Vec<&str> = module.keys().map(String::as_str).collect();
    assert_eq!(names, expected.keys().copied().collect::<Vec<_>>(), "every module request is checked, none missing");
    for (name, number) in &module {
        assert_eq!(
            *number,
            expected[name.as_str()],
            "{name}: module {number:#x}, crate {:#x}",
            expected[name.as_str()]
        );
    }
}
