//! include/mshare.h and the Rust crate describe the same ABI: a C program built against the
//! header prints every ioctl number and structure size, and they must match the crate's.

use mshare_uapi::device::*;
use mshare_uapi::msharefs::*;
use std::path::Path;
use std::process::Command;

const PROGRAM: &str = r#"
#include <stdio.h>
#include "mshare.h"
#define SHOW(x) printf("%s %llu\n", #x, (unsigned long long)(x))
int main(void)
{
	SHOW(MSHAREFS_GET_SIZE); SHOW(MSHAREFS_SET_SIZE); SHOW(MSHAREFS_CREATE_MAPPING);
	SHOW(MSHAREFS_UNMAP); SHOW(MSHAREFS_GET_STATS); SHOW(MSHAREFS_SET_PROT);
	SHOW(MSHAREFS_V1_GET_SIZE); SHOW(MSHAREFS_V1_SET_SIZE); SHOW(MSHAREFS_V1_CREATE_MAPPING);
	SHOW(MSHAREFS_V1_UNMAP); SHOW(MSHAREFS_V3_CREATE_MAPPING); SHOW(MSHAREFS_V3_UNMAP);
	SHOW(MSHARE_CREATE); SHOW(MSHARE_ATTACH); SHOW(MSHARE_DETACH); SHOW(MSHARE_MAP);
	SHOW(MSHARE_UNMAP); SHOW(MSHARE_PROTECT);
	SHOW(MSHARE_ATTACH_READ_ONLY); SHOW(MSHARE_ATTACH_FIXED);
	SHOW(sizeof(struct mshare_create)); SHOW(sizeof(struct mshare_stats));
	SHOW(sizeof(struct mshare_attach)); SHOW(sizeof(struct mshare_map));
	SHOW(sizeof(struct mshare_range)); SHOW(sizeof(struct mshare_protect));
	return 0;
}
"#;

/// A v3 program includes the series' header name with `MSHAREFS_API_V3`: the unprefixed
/// names are then v3's, and `region_offset` names the field v1 calls `addr`.
const PROGRAM_V3: &str = r#"
#define MSHAREFS_API_V3
#include <stdio.h>
#include <stddef.h>
#include <linux/msharefs.h>
int main(void)
{
	struct mshare_create c = { .region_offset = 4096 };
	printf("%llu %llu %llu %zu\n", (unsigned long long)MSHAREFS_CREATE_MAPPING,
	       (unsigned long long)MSHAREFS_UNMAP, (unsigned long long)c.addr,
	       offsetof(struct mshare_create, size));
	return 0;
}
"#;

#[test]
fn a_v3_program_gets_v3_names_from_the_series_header() {
    let out = compile_and_run("v3", PROGRAM_V3);
    assert_eq!(out.trim(), format!("{} {} 4096 8", v3::MSHAREFS_CREATE_MAPPING, v3::MSHAREFS_UNMAP));
}

/// Builds `source` against include/ and returns what it prints.
fn compile_and_run(name: &str, source: &str) -> String {
    let dir = std::env::temp_dir().join(format!("mshare-header-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (file, binary) = (dir.join("show.c"), dir.join("show"));
    std::fs::write(&file, source).unwrap();
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let built = Command::new("cc")
        .args(["-Wall", "-Werror", "-std=c11", "-I"])
        .arg(&include)
        .arg(&file)
        .arg("-o")
        .arg(&binary)
        .output()
        .expect("running cc (installed by make toolchain)");
    assert!(built.status.success(), "the header does not compile: {}", String::from_utf8_lossy(&built.stderr));
    let out = Command::new(&binary).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_c_header_matches_the_rust_constants() {
    let text = compile_and_run("v1", PROGRAM);
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from: {text}"))
    };
    assert_eq!(value("MSHAREFS_GET_SIZE"), MSHAREFS_GET_SIZE);
    assert_eq!(value("MSHAREFS_SET_SIZE"), MSHAREFS_SET_SIZE);
    assert_eq!(value("MSHAREFS_CREATE_MAPPING"), MSHAREFS_CREATE_MAPPING);
    assert_eq!(value("MSHAREFS_UNMAP"), MSHAREFS_UNMAP);
    assert_eq!(value("MSHAREFS_GET_STATS"), MSHAREFS_GET_STATS);
    assert_eq!(value("MSHAREFS_SET_PROT"), MSHAREFS_SET_PROT);
    assert_eq!(value("MSHAREFS_V1_GET_SIZE"), MSHAREFS_GET_SIZE);
    assert_eq!(value("MSHAREFS_V1_SET_SIZE"), MSHAREFS_SET_SIZE);
    assert_eq!(value("MSHAREFS_V1_CREATE_MAPPING"), MSHAREFS_CREATE_MAPPING);
    assert_eq!(value("MSHAREFS_V1_UNMAP"), MSHAREFS_UNMAP);
    assert_eq!(value("MSHAREFS_V3_CREATE_MAPPING"), v3::MSHAREFS_CREATE_MAPPING);
    assert_eq!(value("MSHAREFS_V3_UNMAP"), v3::MSHAREFS_UNMAP);
    assert_eq!(value("MSHARE_CREATE"), MSHARE_CREATE);
    assert_eq!(value("MSHARE_ATTACH"), MSHARE_ATTACH);
    assert_eq!(value("MSHARE_DETACH"), MSHARE_DETACH);
    assert_eq!(value("MSHARE_MAP"), MSHARE_MAP);
    assert_eq!(value("MSHARE_UNMAP"), MSHARE_UNMAP);
    assert_eq!(value("MSHARE_PROTECT"), MSHARE_PROTECT);
    assert_eq!(value("MSHARE_ATTACH_READ_ONLY"), u64::from(MSHARE_ATTACH_READ_ONLY));
    assert_eq!(value("MSHARE_ATTACH_FIXED"), u64::from(MSHARE_ATTACH_FIXED));
    assert_eq!(value("sizeof(struct mshare_create)"), std::mem::size_of::<MshareCreate>() as u64);
    assert_eq!(value("sizeof(struct mshare_stats)"), std::mem::size_of::<MshareStats>() as u64);
    assert_eq!(value("sizeof(struct mshare_attach)"), std::mem::size_of::<MshareAttach>() as u64);
    assert_eq!(value("sizeof(struct mshare_map)"), std::mem::size_of::<MshareMap>() as u64);
    assert_eq!(value("sizeof(struct mshare_range)"), std::mem::size_of::<MshareRange>() as u64);
    assert_eq!(value("sizeof(struct mshare_protect)"), std::mem::size_of::<MshareProtect>() as u64);
}
