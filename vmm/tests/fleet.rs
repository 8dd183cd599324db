//! Fleets of tiny guests in one VMM process sharing a region: what one VM writes another
//! reads, a read-only VM's write reaches nobody, and bad fleet files stop everything.

mod common;

use common::*;
use std::process::{Command, Output};

fn write_elf(dir: &std::path::Path, name: &str, code: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, tiny_elf(code)).unwrap();
    path.display().to_string()
}

fn launch(fleet: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mshare-vmm")).arg("launch").arg(fleet).args(extra).output().unwrap()
}

#[test]
fn one_vm_writes_another_reads_a_read_only_vm_changes_nothing() {
    share_through_a_region(&[], true);
}

#[test]
fn the_same_with_a_memfd_region() {
    share_through_a_region(&[], false);
}

#[test]
fn the_same_with_a_process_per_vm() {
    share_through_a_region(&["--process-per-vm"], false);
    let out = share_through_a_region(&["--process-per-vm"], true);
    let err = stderr(&out);
    let pids: Vec<&str> = err.lines().filter(|l| l.contains(": process ")).collect();
    assert_eq!(pids.len(), 3, "one process per VM: {err}");
}

/// Writer, reader and read-only viewer in one fleet; with `file`, the region is a file
/// checked after the VMM exits, else a memfd.
fn share_through_a_region(extra: &[&str], file: bool) -> Output {
    let g = guest(&[]);
    let dir = g.dir.as_path();
    let mut writer = bar2_address_into_rbx();
    writer.extend([0xc6, 0x03, 0xab]); // mov byte [rbx], 0xab
    writer.extend([0xc6, 0x43, 0x08, 0x01]); // mov byte [rbx+8], 1: the data is there
    writer.extend(exit_with(0));
    let mut reader = bar2_address_into_rbx();
    reader.extend([0x8a, 0x43, 0x08, 0x84, 0xc0, 0x74, 0xf9]); // wait until [rbx+8] != 0
    reader.extend([0x8a, 0x03]); // mov al, [rbx]
    reader.extend(exit_with_al());
    let mut read_only = bar2_address_into_rbx();
    read_only.extend([0xc6, 0x43, 0x10, 0xee]); // mov byte [rbx+16], 0xee
    read_only.extend([0x8a, 0x43, 0x10]); // mov al, [rbx+16]
    read_only.extend(exit_with_al());
    let region_file = dir.join("shared");
    let vm = |name: &str, kernel: String, access: &str| {
        format!("[[vm]]\nname = \"{name}\"\nkernel = \"{kernel}\"\nmemory = \"64M\"\ntimeout = 30\nserial = \"{name}.console\"\nregions = [{{ name = \"db\", access = \"{access}\" }}]\n\n")
    };
    let backing = if file {
        format!("backing = \"path\"\npath = \"{}\"", region_file.display())
    } else {
        "backing = \"memfd\"".into()
    };
    let fleet = format!(
        "[[region]]\nname = \"db\"\nsize = \"2M\"\n{backing}\n\n{}{}{}",
        vm("reader", write_elf(dir, "reader.elf", &reader), "rw"),
        vm("writer", write_elf(dir, "writer.elf", &writer), "rw"),
        vm("viewer", write_elf(dir, "viewer.elf", &read_only), "ro"),
    );
    let fleet_path = dir.join("fleet.toml");
    std::fs::write(&fleet_path, fleet).unwrap();
    let out = launch(&fleet_path, extra);
    let err = stderr(&out);
    assert!(err.contains("vm 'reader': the guest exited with status 171"), "reader must see 0xab: {err}");
    assert!(err.contains("vm 'writer': the guest exited with status 0"), "{err}");
    assert!(err.contains("vm 'viewer': the guest exited with status 0"), "the read-only VM reads back 0: {err}");
    assert!(err.contains("region 'db' is read-only in this VM: dropped"), "{err}");
    assert_eq!(out.status.code(), Some(171), "first non-zero status in file order: {err}");
    if file {
        let bytes = std::fs::read(&region_file).unwrap();
        assert_eq!((bytes[0], bytes[8], bytes[16]), (0xab, 1, 0), "the read-only write never reached the region");
    }
    out
}

#[test]
fn a_bad_fleet_file_starts_nothing_and_exits_2() {
    let g = guest(&exit_with(0));
    let fleet_path = g.dir.as_path().join("bad.toml");
    let marker = g.dir.as_path().join("created-by-region");
    std::fs::write(
        &fleet_path,
        format!(
            "[[region]]\nname = \"db\"\nsize = \"2M\"\npath = \"{}\"\n\n[[vm]]\nname = \"a\"\nkernel = \"{}\"\nregions = [{{ name = \"dbx\" }}]\n",
            marker.display(),
            g.kernel.display()
        ),
    )
    .unwrap();
    let out = launch(&fleet_path, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("vm 'a': attaches region 'dbx', which no [[region]] defines (defined: db)"), "{err}");
    assert!(!marker.exists(), "nothing may be created before the whole file is valid");
}

/// A fleet VM whose guest crashes after writing into the region stops alone: the others
/// keep running, still see its data, and the fleet reports the crash.
#[test]
fn a_crashing_vm_stops_alone_and_its_data_stays() {
    let g = guest(&[]);
    let dir = g.dir.as_path();
    let mut crasher = bar2_address_into_rbx();
    crasher.extend([0xc6, 0x03, 0x5c]); // mov byte [rbx], 0x5c
    crasher.extend([0xc6, 0x43, 0x08, 0x01]); // mov byte [rbx+8], 1
    crasher.extend([0x0f, 0x0b]); // ud2: no IDT, the vCPU shuts down
    let mut survivor = bar2_address_into_rbx();
    survivor.extend([0x8a, 0x43, 0x08, 0x84, 0xc0, 0x74, 0xf9]); // wait until [rbx+8] != 0
    survivor.extend(mov_rax(0x1_0000)); // then spin a while (emulated: about 0.2 s) past the crash
    survivor.extend([0x48, 0xff, 0xc8, 0x75, 0xfb]); // dec rax; jnz
    survivor.extend([0x8a, 0x03]); // mov al, [rbx]
    survivor.extend(exit_with_al());
    let region_file = dir.join("shared");
    let vm = |name: &str, kernel: String| {
        format!("[[vm]]\nname = \"{name}\"\nkernel = \"{kernel}\"\nmemory = \"64M\"\ntimeout = 60\nserial = \"{name}.console\"\nregions = [{{ name = \"db\" }}]\n\n")
    };
    let fleet = format!(
        "[[region]]\nname = \"db\"\nsize = \"2M\"\npath = \"{}\"\n\n{}{}",
        region_file.display(),
        vm("crasher", write_elf(dir, "crasher.elf", &crasher)),
        vm("survivor", write_elf(dir, "survivor.elf", &survivor)),
    );
    let fleet_path = dir.join("fleet.toml");
    std::fs::write(&fleet_path, fleet).unwrap();
    for mode in [&[][..], &["--process-per-vm"][..]] {
        let out = launch(&fleet_path, mode);
        let err = stderr(&out);
        assert!(err.contains("vm 'survivor': the guest exited with status 92"), "{mode:?}: {err}");
        assert!(
            err.contains("error: vm 'crasher': vCPU 0 triple-faulted")
                || err.contains("error: vm 'crasher': KVM internal error"),
            "{mode:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(125), "the crash is the fleet's first non-zero status: {err}");
        assert_eq!(std::fs::read(&region_file).unwrap()[0], 0x5c, "{mode:?}: the crasher's data outlives it");
        std::fs::write(&region_file, vec![0u8; 2 << 20]).unwrap();
    }
}

/// A process-per-vm VMM process killed with SIGKILL leaves a file-backed region intact, and
/// a VM started afterwards sees what the killed one wrote.
#[test]
fn a_killed_vm_process_leaves_the_region_for_the_next_vm() {
    let g = guest(&[]);
    let dir = g.dir.as_path();
    let mut writer = bar2_address_into_rbx();
    writer.extend([0xc6, 0x03, 0x6b]); // mov byte [rbx], 0x6b
    writer.extend([0xeb, 0xfe]); // then spin until killed
    let mut reader = bar2_address_into_rbx();
    reader.extend([0x8a, 0x03]); // mov al, [rbx]
    reader.extend(exit_with_al());
    let region_file = dir.join("persistent");
    let region = format!("name=p,size=2M,path={}", region_file.display());
    let writer_elf = write_elf(dir, "writer.elf", &writer);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mshare-vmm"))
        .args([
            "run",
            "--memory",
            "64M",
            "--timeout",
            "60",
            "--serial",
            "/dev/null",
            "--region",
            &region,
            "--kernel",
            &writer_elf,
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read(&region_file).map(|b| b.first() != Some(&0x6b)).unwrap_or(true) {
        assert!(std::time::Instant::now() < deadline, "the writer never wrote");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    assert!(child.wait().unwrap().code().is_none(), "killed by a signal");
    let out = run_vmm(&guest(&reader), &["--region", &region]);
    assert_eq!(out.status.code(), Some(0x6b), "the next VM reads what the killed one wrote: {}", stderr(&out));
}

/// The database tier's fleet files (`make bench-kvm`, and the nested half of
/// `make bench-dbtier`) are fleet files this VMM takes: each way's, as written.
#[test]
fn the_lmdb_tier_fleet_files_parse() {
    use guest_runner::lmdb_tier::{FleetSpec, Way};
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/mshare-tier-fleet-").unwrap();
    let file = |name: &str, size: u64| {
        let path = dir.as_path().join(name);
        std::fs::File::create(&path).unwrap().set_len(size).unwrap();
        path.display().to_string()
    };
    let (database, kernel, initrd) = (file("db.img", 256 << 20), file("vmlinux", 4096), file("initramfs.cpio", 4096));
    for way in Way::ALL {
        let spec = FleetSpec {
            way,
            size_mib: 256,
            vms: 2,
            database: &database,
            kernel: &kernel,
            initrd: &initrd,
            readers: &[8, 64],
            seconds: 3,
            repeats: 3,
            base_memory_mib: 768,
            serial_dir: Some("/tmp/tier"),
            timeout_s: 1800,
        };
        let fleet = vmm::fleet::Fleet::parse(&dir.as_path().join("tier.toml"), &spec.toml())
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", way.name(), spec.toml()));
        assert_eq!(fleet.regions.len(), 1);
        assert_eq!(fleet.vms.len(), 2);
        let memory = if way.private() { 1024 } else { 768 } << 20;
        assert!(fleet.vms.iter().all(|vm| vm.memory == memory), "{}: {:?}", way.name(), fleet.vms);
    }
}
