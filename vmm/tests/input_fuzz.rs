//! Bounded randomized runs over the VMM's input parsers and what a guest can do to the
//! ivshmem devices: no input may panic, and a few invariants must hold whatever the input.
//! A fixed seed (printed; `MSHARE_FUZZ_SEED` and `MSHARE_FUZZ_ROUNDS` override) makes a
//! failure replayable. These run on stable with every `cargo test`; the coverage-guided runs
//! of the same inputs are the cargo-fuzz targets in vmm/fuzz (`make fuzz`, 10 s each in
//! `make test`). The device test and the `pci_config` target share one harness,
//! `vmm_testing::IvshmemHarness`: the real devices in a real KVM VM (so this test needs
//! /dev/kvm, as the tiny-guest tests do), their memslots checked against KVM after every
//! step; a failing input is saved for replay under cargo-fuzz.

use guest_runner::fuzz::{mutate, setup};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use vmm::config::parse_size;
use vmm::fleet::Fleet;
use vmm::regions::RegionSpec;
use vmm_testing::{IvshmemHarness, OP_LEN};

#[test]
fn fleet_files_never_panic_and_errors_are_one_line() {
    let (mut rng, rounds) = setup();
    let base = "[[region]]\nname = \"db\"\nsize = \"64M\"\nbacking = \"memfd\"\n\n[[vm]]\nname = \"a\"\nkernel = \"/proc/self/exe\"\n\
                memory = \"128M\"\ncpus = 2\ncommand = [\"sh\", \"-c\", \"true\"]\nregions = [{ name = \"db\", access = \"ro\" }]\n";
    for _ in 0..rounds / 10 {
        let text = mutate(&mut rng, base);
        if let Err(e) = Fleet::parse(Path::new("/fuzz/fleet.toml"), &text) {
            let msg = e.to_string();
            assert!(msg.starts_with("/fuzz/fleet.toml: "), "{msg:?} for {text:?}");
            assert_eq!(msg.lines().count(), 1, "{msg:?} for {text:?}");
        }
    }
}

#[test]
fn region_specs_and_sizes_never_panic() {
    let (mut rng, rounds) = setup();
    for _ in 0..rounds {
        let spec = mutate(&mut rng, "name=db,size=256M,backing=hugetlbfs,pagesize=2M,path=/x,fd=3,ro");
        match RegionSpec::parse_flag(&spec) {
            Ok((region, attach)) => {
                let printed = region.to_flag(&attach);
                assert_eq!(RegionSpec::parse_flag(&printed), Ok((region, attach)), "{spec:?} printed as {printed:?}");
            }
            Err(e) => assert_eq!(e.to_string().lines().count(), 1, "{e}"),
        }
        let _ = parse_size(&mutate(&mut rng, "512M"));
    }
}

#[test]
fn guest_accesses_to_ivshmem_devices_keep_bars_and_memslots_in_step() {
    // The real devices in a real KVM VM (vmm_testing::IvshmemHarness, shared with the
    // pci_config fuzz target): inputs of 1 to 64 operations until `rounds` operations ran.
    let (mut rng, rounds) = setup();
    let harness = IvshmemHarness::new().expect("a KVM VM for the ivshmem harness (this test needs /dev/kvm)");
    let mut ops = 0;
    while ops < rounds {
        let len = 1 + rng.below(64);
        let input: Vec<u8> = (0..len * OP_LEN).map(|_| rng.next_u64() as u8).collect();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| harness.run(&input))) {
            let file = std::env::temp_dir().join("mshare-ivshmem-input");
            let saved = std::fs::write(&file, &input).map_or_else(|e| format!("not saved: {e}"), |()| "saved".into());
            eprintln!(
                "failing input {saved} in {} (replay: cd vmm && cargo +nightly fuzz run pci_config {})",
                file.display(),
                file.display()
            );
            resume_unwind(panic);
        }
        ops += len;
    }
}
