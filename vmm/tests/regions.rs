//! Shared regions seen by tiny guests: the ivshmem device in PCI configuration space, its
//! BAR2 backed by the region (memfd, hugetlb, file), read-only attach, and persistence of a
//! file-backed region after the VMM exits. The guests are a few bytes of 64-bit code in a
//! minimal ELF (see tiny_guests.rs for the format).

mod common;

use common::*;
use std::process::Command;

#[test]
fn guest_finds_the_device_and_its_writes_reach_the_backing_file() {
    // The guest reads its vendor/device ID and writes it at the start of BAR2.
    let mut code = bar2_address_into_rbx();
    code.extend(config_read(1, 0));
    code.extend([0x89, 0x03]); // mov [rbx], eax
    code.extend(exit_with(0));
    let g = guest(&code);
    let file = g.dir.as_path().join("region");
    let region = format!("name=db,size=4M,path={}", file.display());
    let out = run_vmm(&g, &["--region", &region]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("region 'db' (4 MiB) at 0x4000000 as PCI 00:01.0"), "{}", stderr(&out));
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len(), 4 << 20);
    assert_eq!(&bytes[..4], &[0xf4, 0x1a, 0x10, 0x11], "1af4:1110 written through BAR2, present after exit");
}

#[test]
fn class_revision_and_name_capability_are_in_config_space() {
    // Exit with a byte of config space chosen by the test: class code, capability pointer,
    // then the capability's first name byte.
    let cases: [(u32, u32, u8); 4] = [
        (2, 24, 0x05),        // class: memory controller
        (2, 0, 0x01),         // revision 1
        (13, 0, 0x40),        // capability pointer
        (0x44 / 4, 24, b'z'), // 0x40: [0x09, next, len, 'M'], 0x44: ['S', 1, flags, 'z'], ...
    ];
    for (reg, shift, want) in cases {
        let mut code = config_read(1, reg);
        if shift > 0 {
            code.extend([0xc1, 0xe8, shift as u8]); // shr eax, shift
        }
        code.extend(exit_with_al());
        let out = run_vmm(&guest(&code), &["--region", "name=zeta,size=1M"]);
        assert_eq!(out.status.code(), Some(i32::from(want)), "register {reg} >> {shift}: {}", stderr(&out));
    }
}

#[test]
fn moving_bar2_moves_the_memslot() {
    // Sizing probe and relocation as a guest kernel does them: decode off, all ones, new
    // address, decode on; then a write at the new address must land in the region.
    let new_base: u32 = 0x0800_0000;
    let mut code = config_write(1, 1, 0); // command: memory decode off
    code.extend(config_write(1, 6, 0xffff_ffff));
    code.extend(config_write(1, 7, 0xffff_ffff));
    code.extend(config_write(1, 6, new_base));
    code.extend(config_write(1, 7, 0));
    code.extend(config_write(1, 1, 2)); // memory decode on
    code.extend(bar2_address_into_rbx());
    code.extend([0xc6, 0x43, 0x08, 0x5d]); // mov byte [rbx+8], 0x5d
    code.extend(exit_with(0));
    let g = guest(&code);
    let file = g.dir.as_path().join("region");
    let json = g.dir.as_path().join("stats.json");
    let region = format!("name=mv,size=1M,path={}", file.display());
    let out = run_vmm(&g, &["--region", &region, "--stats-json", json.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(&file).unwrap()[8], 0x5d, "the write at the moved BAR reached the region");
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let used = &stats["vms"][0]["regions"][0];
    assert_eq!(used["guest_address"], u64::from(new_base), "the statistics follow the BAR");
    assert_eq!(used["memslot_maps"], 2, "mapped at start, then at the new address");
}

#[test]
fn a_bar2_moved_onto_guest_ram_stops_the_vm_with_the_reason() {
    // KVM refuses a memslot over guest RAM (64 MiB here): the VM must not run on with its
    // region silently unmapped.
    let mut code = config_write(1, 1, 0); // command: memory decode off
    code.extend(config_write(1, 6, 0x0010_0000)); // BAR2 at 1 MiB, inside RAM
    code.extend(config_write(1, 7, 0));
    code.extend(config_write(1, 1, 2)); // memory decode on
    code.extend(exit_with(0));
    let out = run_vmm(&guest(&code), &["--region", "name=mv,size=1M"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("region 'mv': registering memslot"), "{err}");
    assert!(err.contains("the guest moved the region's BAR where KVM cannot map it"), "{err}");
}

#[test]
fn read_only_attach_drops_guest_writes_and_the_vm_goes_on() {
    // Write 0x99 to BAR2[0], read it back, exit with what was read.
    let mut code = bar2_address_into_rbx();
    code.extend([0xc6, 0x03, 0x99]); // mov byte [rbx], 0x99
    code.extend([0x8a, 0x03]); // mov al, [rbx]
    code.extend(exit_with_al());
    let g = guest(&code);
    let file = g.dir.as_path().join("region");
    let mut initial = vec![0u8; 1 << 20];
    initial[0] = 0x42;
    std::fs::write(&file, &initial).unwrap();
    let out = run_vmm(&g, &["--region", &format!("name=ro,size=1M,path={},ro", file.display())]);
    assert_eq!(out.status.code(), Some(0x42), "the guest must read the old byte: {}", stderr(&out));
    assert!(stderr(&out).contains("region 'ro' is read-only in this VM: dropped a 1-byte guest write at offset 0x0"));
    assert_eq!(std::fs::read(&file).unwrap()[0], 0x42, "the region is unchanged");
}

#[test]
fn memfd_region_is_readable_and_writable() {
    let mut code = bar2_address_into_rbx();
    code.extend([0xc6, 0x43, 0x10, 0x77]); // mov byte [rbx+16], 0x77
    code.extend([0x8a, 0x43, 0x10]); // mov al, [rbx+16]
    code.extend(exit_with_al());
    let out = run_vmm(&guest(&code), &["--region", "name=m,size=2M"]);
    assert_eq!(out.status.code(), Some(0x77), "{}", stderr(&out));
}

#[test]
fn hugetlb_region_is_readable_and_writable() {
    const PAGES: u64 = 2;
    // A failure, not a quiet pass: the suite is meant to run as root (make test, CI).
    assert!(
        reserve_huge_pages(PAGES),
        "this host has fewer than {PAGES} free 2 MiB huge pages and they cannot be reserved: run as root, or \
         echo {PAGES} > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    );
    let mut code = bar2_address_into_rbx();
    code.extend([0xc6, 0x43, 0x20, 0x66]); // mov byte [rbx+32], 0x66
    code.extend([0x8a, 0x43, 0x20]); // mov al, [rbx+32]
    code.extend(exit_with_al());
    let out = run_vmm(&guest(&code), &["--region", "name=h,size=4M,backing=hugetlbfs,pagesize=2M"]);
    assert_eq!(out.status.code(), Some(0x66), "{}", stderr(&out));
}

/// Makes sure `pages` 2 MiB huge pages are free, reserving more as root if needed.
fn reserve_huge_pages(pages: u64) -> bool {
    let dir = "/sys/kernel/mm/hugepages/hugepages-2048kB";
    let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok().and_then(|s| s.trim().parse::<u64>().ok());
    let (Some(total), Some(free)) = (read("nr_hugepages"), read("free_hugepages")) else { return false };
    if free >= pages {
        return true;
    }
    let _ = std::fs::write(format!("{dir}/nr_hugepages"), (total + pages - free).to_string());
    read("free_hugepages").is_some_and(|f| f >= pages)
}

#[test]
fn bad_region_specs_exit_2_before_anything_starts() {
    let g = guest(&exit_with(0));
    for (spec, message) in [
        ("name=db,size=3M", "not a power of two"),
        ("name=db", "no size="),
        ("name=db,size=4M,backing=hugetlbfs,pagesize=4K", "pagesize=2M or pagesize=1G"),
        ("name=db,size=4M,shape=round", "unknown item 'shape=round'"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mshare-vmm"))
            .args(["run", "--memory", "64M", "--kernel"])
            .arg(&g.kernel)
            .args(["--region", spec])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{spec}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{spec}: {}", stderr(&out));
    }
}

#[test]
fn stats_json_lists_memslots_regions_and_kvm_statistics() {
    let g = guest(&exit_with(0));
    let json_path = g.dir.as_path().join("stats.json");
    let out = run_vmm(
        &g,
        &["--region", "name=db,size=4M", "--region", "name=r,size=1M,ro", "--stats-json", json_path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let vm = &stats["vms"][0];
    let slots: Vec<(u64, &str)> = vm["memslots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["guest_address"].as_u64().unwrap(), s["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(slots, vec![(0, "ram"), (0x400_0000, "region"), (0x440_0000, "region")]);
    assert_eq!(vm["regions"][1]["read_only"], true);
    assert!(vm["host_memory_kib_at_stop"]["Rss"].as_u64().unwrap() > 0);
    assert!(vm["kvm_stats"].is_object(), "this host's KVM has KVM_GET_STATS_FD");
    assert_eq!(stats["regions"][0]["attached_by"][0], "vm");
    assert!(stderr(&out).contains("host memory at stop: RSS"), "{}", stderr(&out));
}
