//! The CPUID a vCPU sees: the host's supported leaves with its APIC id, the topology
//! (one package, one thread per core), the hypervisor bit and no PMU.

use super::{kvm, VcpuError};
use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

// CPUID leaves and bits fixed up for the guest.
const LEAF_FEATURES: u32 = 1;
const LEAF_CACHE_PARAMS: u32 = 4;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// Number of bits an APIC id needs for `cpus` CPUs.
fn apic_id_bits(cpus: u8) -> u32 {
    u32::from(cpus).next_power_of_two().trailing_zeros()
}

/// The host's supported CPUID fixed up for vCPU `id` of `cpus`: APIC ids and topology (one
/// package, one thread per core), the hypervisor bit, no PMU.
pub fn guest_cpuid(supported: &CpuId, id: u8, cpus: u8) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(cpus) << 16);
                entry.ecx |= ECX_HYPERVISOR;
                if cpus > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                entry.eax = (entry.eax & 0x3fff) | ((u32::from(cpus) - 1) << 26);
            }
            LEAF_PMU => {
                entry.eax = 0;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                entry.edx = u32::from(id);
                match entry.index {
                    0 => {
                        entry.eax = 0;
                        entry.ebx = 1;
                        entry.ecx = 1 << 8;
                    }
                    1 => {
                        entry.eax = apic_id_bits(cpus);
                        entry.ebx = u32::from(cpus);
                        entry.ecx = (2 << 8) | 1;
                    }
                    level => {
                        entry.eax = 0;
                        entry.ebx = 0;
                        entry.ecx = level;
                    }
                }
            }
            _ => {}
        }
    }
    cpuid
}

/// The host's supported CPUID.
pub fn supported_cpuid(kvm_fd: &Kvm) -> Result<CpuId, VcpuError> {
    kvm_fd.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(kvm("KVM_GET_SUPPORTED_CPUID"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn cpuid_with(entries: &[kvm_cpuid_entry2]) -> CpuId {
        CpuId::from_entries(entries).unwrap()
    }

    #[test]
    fn cpuid_carries_apic_id_topology_and_hypervisor_bit() {
        let supported = cpuid_with(&[
            kvm_cpuid_entry2 { function: 1, ebx: 0xffff_0800, edx: 0, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xb, index: 0, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xb, index: 1, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xa, eax: 0x0703_0802, ..Default::default() },
        ]);
        let cpuid = guest_cpuid(&supported, 2, 4);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx, (2 << 24) | (4 << 16) | 0x0800);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!((e[1].edx, e[1].ebx, e[1].ecx), (2, 1, 1 << 8));
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx), (2, 4, (2 << 8) | 1));
        assert_eq!(e[3].eax, 0, "no PMU");
        let single = guest_cpuid(&supported, 0, 1);
        assert_eq!(single.as_slice()[0].edx & EDX_HTT, 0);
    }

    #[test]
    fn apic_id_width() {
        assert_eq!(apic_id_bits(1), 0);
        assert_eq!(apic_id_bits(2), 1);
        assert_eq!(apic_id_bits(3), 2);
        assert_eq!(apic_id_bits(8), 3);
    }
}
