//! Bounded randomized runs over the VMM's input parsers and its PCI configuration space:
//! no input may panic, and a few invariants must hold whatever the guest writes. A fixed
//! seed (printed; `MSHARE_FUZZ_SEED` and `MSHARE_FUZZ_ROUNDS` override) makes a failure
//! replayable. These run on stable with every `cargo test`; the coverage-guided runs of the
//! same inputs are the cargo-fuzz targets in vmm/fuzz (`make fuzz`, 10 s each in `make test`).

use guest_runner::fuzz::{mutate, setup};
use std::path::Path;
use std::sync::{Arc, Mutex};
use vmm::config::parse_size;
use vmm::devices::ivshmem;
use vmm::devices::pci::{ConfigOnly, PciBus, PciConfigIo, PciDevice};
use vmm::devices::PioDevice;
use vmm::fleet::Fleet;
use vmm::regions::RegionSpec;

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
fn guest_config_space_accesses_never_panic_and_keep_invariants() {
    let (mut rng, rounds) = setup();
    let device = Arc::new(Mutex::new(ConfigOnly(ivshmem::config_space(1 << 30))));
    let mut bus = PciBus::new();
    bus.add(device.clone());
    let mut io = PciConfigIo::new(Arc::new(bus));
    for _ in 0..rounds {
        let offset = rng.below(10) as u16; // a little past the 8 ports too
        let len = [1, 2, 4, 3, 0][rng.below(5)];
        let mut data = vec![0u8; len];
        if rng.below(2) == 0 {
            // Mostly aim at our device so its registers get exercised.
            let value =
                if rng.below(4) == 0 { rng.next_u64() as u32 } else { 0x8000_0800 | (rng.below(64) as u32) << 2 };
            data.iter_mut().enumerate().for_each(|(i, b)| *b = (value >> (8 * i)) as u8);
            io.write(offset, &data);
        } else {
            io.read(offset, &mut data);
        }
        let device = device.lock().unwrap();
        let config = device.config();
        assert_eq!(config.read(0), 0x1110_1af4, "IDs are read-only");
        assert_eq!(config.read(6) & 0xf, 0xc, "BAR2 stays 64-bit prefetchable");
        assert_eq!(config.read(6) & 0x3fff_fff0, 0, "a 1 GiB BAR has no address bits below 1 GiB");
    }
}
