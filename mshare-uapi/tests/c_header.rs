//! What the build cannot see: which names a C program gets. The build takes the crate's
//! numbers from mshare.h's `MSHAREFS_V1_*`/`MSHAREFS_V3_*` names (build.rs); a program
//! uses the unprefixed ones, which the header points at v1's, or at v3's when the program
//! defines `MSHAREFS_API_V3` before including the series' header name.

use mshare_uapi::abi;
use mshare_uapi::msharefs::{self, v3};
use std::path::Path;
use std::process::Command;

/// A v1 program, as the January 2025 series' examples include the header.
const PROGRAM_V1: &str = r#"
#include <stdio.h>
#include "mshare.h"
int main(void)
{
	printf("%llu %llu %llu %llu\n", (unsigned long long)MSHAREFS_GET_SIZE,
	       (unsigned long long)MSHAREFS_SET_SIZE, (unsigned long long)MSHAREFS_CREATE_MAPPING,
	       (unsigned long long)MSHAREFS_UNMAP);
	return 0;
}
"#;

/// A v3 program: the unprefixed names are v3's, and `region_offset` names the field v1
/// calls `addr`.
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

/// A program calling the system calls through the header's wrappers, on a kernel without
/// them (the build host's): each is -1 with ENOSYS, and the numbers are the crate's.
const PROGRAM_SYSCALLS: &str = r#"
#include <errno.h>
#include <stdio.h>
#include "mshare.h"
int main(void)
{
	void *addr = mshare_attach(3, 0, 2 << 20, NULL, 0);
	int enosys = mshare_create(0) == -1 && errno == ENOSYS && addr == (void *)-1 &&
		     mshare_detach(addr, 1) == -1 && mshare_map(3, 0, 0, 3, 0, -1) == -1 &&
		     mshare_unmap(3, 0, 0) == -1 && mshare_protect(3, 0, 0, 1) == -1 &&
		     mshare_advise(3, 0, 0, 4) == -1 && errno == ENOSYS;
	printf("%d %d %d\n", __NR_mshare_create, __NR_mshare_advise, enosys);
	return 0;
}
"#;

#[test]
fn a_c_program_gets_the_system_calls_from_the_header() {
    let out = compile_and_run("syscalls", PROGRAM_SYSCALLS);
    assert_eq!(out.trim(), format!("{} {} 1", abi::SYS_MSHARE_CREATE, abi::SYS_MSHARE_ADVISE));
}

#[test]
fn a_v1_program_gets_v1_names_from_the_header() {
    let out = compile_and_run("v1", PROGRAM_V1);
    let expected = [
        msharefs::MSHAREFS_GET_SIZE,
        msharefs::MSHAREFS_SET_SIZE,
        msharefs::MSHAREFS_CREATE_MAPPING,
        msharefs::MSHAREFS_UNMAP,
    ];
    assert_eq!(out.trim(), expected.map(|n| n.to_string()).join(" "));
}

#[test]
fn a_v3_program_gets_v3_names_from_the_series_header() {
    let out = compile_and_run("v3", PROGRAM_V3);
    assert_eq!(out.trim(), format!("{} {} 4096 8", v3::MSHAREFS_CREATE_MAPPING, v3::MSHAREFS_UNMAP));
}

/// Builds `source` against include/ (strict C11, warnings as errors: the header needs no
/// GNU C and warns of nothing) and returns what it prints.
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
