//! `AWS:InstanceDetailedInformation` from `/proc/cpuinfo` and the kernel release.
//!
//! Upstream runs `lscpu` and reads `CPU(s)`, `Model name`, `CPU MHz`, `Socket(s)`,
//! `Core(s) per socket` and `Thread(s) per core`; lscpu takes them from cpuinfo and sysfs, and so
//! does this, as lscpu would:
//! - CPUs: the number of `processor` records.
//! - CPUModel: x86 `model name`; on ARM, lscpu's name of the `CPU implementer`/`CPU part` pair
//!   (ARM Ltd. cores; `0xd08` is `Cortex-A72`), else `model name`, `Processor` (old 32-bit ARM
//!   kernels), or MIPS's `cpu model`.
//! - CPUSpeedMHz: x86 `cpu MHz`, truncated as upstream does; ARM cpuinfo has no clock (its
//!   `BogoMIPS` is a timer-derived loop count, not a speed), so cpufreq's `cpuinfo_max_freq`
//!   (lscpu's `CPU max MHz`) when the board has it, else nothing.
//! - CPUSockets: distinct `physical id`s (1 when there are none, as on ARM).
//! - CPUCores: sockets × `cpu cores` (cores per socket); without `cpu cores`, every CPU is a core.
//! - CPUHyperThreadEnabled: `siblings` / `cpu cores` > 1 (threads per core).
//! - KernelVersion: `proc/sys/kernel/osrelease`, which is what uname's release is.
//! - OSServicePack: empty on Linux, as upstream.

use super::{Entry, GatherError, Host, entry_of, read_capped, under};
use std::path::Path;

/// cpuinfo of a 1024-CPU machine is about 1.5 MiB.
const CPUINFO_CAP: u64 = 4 << 20;

/// lscpu's names of ARM Ltd. (implementer 0x41) cores by `CPU part`.
const ARM_PARTS: [(u32, &str); 32] = [
    (0xb76, "ARM1176"),
    (0xc05, "Cortex-A5"),
    (0xc07, "Cortex-A7"),
    (0xc08, "Cortex-A8"),
    (0xc09, "Cortex-A9"),
    (0xc0d, "Cortex-A12"),
    (0xc0e, "Cortex-A17"),
    (0xc0f, "Cortex-A15"),
    (0xd01, "Cortex-A32"),
    (0xd03, "Cortex-A53"),
    (0xd04, "Cortex-A35"),
    (0xd05, "Cortex-A55"),
    (0xd06, "Cortex-A65"),
    (0xd07, "Cortex-A57"),
    (0xd08, "Cortex-A72"),
    (0xd09, "Cortex-A73"),
    (0xd0a, "Cortex-A75"),
    (0xd0b, "Cortex-A76"),
    (0xd0c, "Neoverse-N1"),
    (0xd0d, "Cortex-A77"),
    (0xd0e, "Cortex-A76AE"),
    (0xd40, "Neoverse-V1"),
    (0xd41, "Cortex-A78"),
    (0xd44, "Cortex-X1"),
    (0xd46, "Cortex-A510"),
    (0xd47, "Cortex-A710"),
    (0xd48, "Cortex-X2"),
    (0xd49, "Neoverse-N2"),
    (0xd4a, "Neoverse-E1"),
    (0xd4b, "Cortex-A78C"),
    (0xd4f, "Neoverse-V2"),
    (0xd80, "Cortex-A520"),
];

pub(super) fn gather(host: &Host<'_>) -> Result<Entry, GatherError> {
    let path = under(host.root, Path::new("/proc/cpuinfo"));
    let cpuinfo = read_capped(&path, CPUINFO_CAP)?.ok_or_else(|| {
        GatherError(format!(
            "cannot read CPU facts: {} is missing",
            path.display()
        ))
    })?;
    let read_small = |p: &str| read_capped(&under(host.root, Path::new(p)), 4096);
    let kernel = read_small("/proc/sys/kernel/osrelease")?.unwrap_or_default();
    let max_khz = read_small("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")?;
    Ok(facts(&cpuinfo, max_khz.as_deref(), kernel.trim()))
}

fn facts(cpuinfo: &str, max_khz: Option<&str>, kernel: &str) -> Entry {
    let pairs: Vec<(&str, &str)> = cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let first = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let number = |key: &str| {
        first(key)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n > 0)
    };

    let cpus = (pairs.iter().filter(|(k, _)| *k == "processor").count() as u64).max(1);
    let mut ids: Vec<&str> = Vec::new();
    for (_, id) in pairs.iter().filter(|(k, _)| *k == "physical id") {
        if !ids.contains(id) {
            ids.push(id);
        }
    }
    let sockets = (ids.len() as u64).max(1);
    let cores_per_socket = number("cpu cores").unwrap_or((cpus / sockets).max(1));
    let threads = number("siblings").map_or(1, |s| s / cores_per_socket);

    let model = arm_core(first("CPU implementer"), first("CPU part"))
        .or_else(|| first("model name"))
        .or_else(|| first("Processor"))
        .or_else(|| first("cpu model"))
        .unwrap_or("");
    let mhz = first("cpu MHz")
        // Truncated, as upstream does: the integer part.
        .and_then(|v| v.split('.').next()?.parse::<u64>().ok())
        .or_else(|| {
            max_khz
                .and_then(|k| k.trim().parse::<u64>().ok())
                .map(|k| k / 1000)
        });

    entry_of(&[
        ("CPUModel", model),
        ("CPUSpeedMHz", &mhz.map_or(String::new(), |m| m.to_string())),
        ("CPUs", &cpus.to_string()),
        ("CPUSockets", &sockets.to_string()),
        ("CPUCores", &(sockets * cores_per_socket).to_string()),
        (
            "CPUHyperThreadEnabled",
            if threads > 1 { "true" } else { "false" },
        ),
        ("OSServicePack", ""),
        ("KernelVersion", kernel),
    ])
}

/// lscpu's name of an ARM Ltd. core, from cpuinfo's hexadecimal implementer and part numbers.
fn arm_core(implementer: Option<&str>, part: Option<&str>) -> Option<&'static str> {
    let hex = |v: &str| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok();
    if hex(implementer?)? != 0x41 {
        return None;
    }
    let part = hex(part?)?;
    ARM_PARTS
        .iter()
        .find(|(p, _)| *p == part)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{root, write};
    use super::*;

    /// Two sockets of a 2-core, 4-thread Xeon (trimmed: the fields lscpu reads).
    fn x86() -> String {
        let mut s = String::new();
        for (n, socket) in [
            (0, 0),
            (1, 0),
            (2, 0),
            (3, 0),
            (4, 1),
            (5, 1),
            (6, 1),
            (7, 1),
        ] {
            s += &format!(
                "processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n\
                 model name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz\n\
                 cpu MHz\t\t: 2499.998\nphysical id\t: {socket}\nsiblings\t: 4\ncore id\t\t: {}\n\
                 cpu cores\t: 2\nbogomips\t: 4999.99\nflags\t\t: fpu vme ht\n\n",
                n % 2
            );
        }
        s
    }

    const PI4_AARCH64: &str = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n\
        CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n\
        processor\t: 1\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\n\
        processor\t: 2\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\n\
        processor\t: 3\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\n\
        Hardware\t: BCM2835\nRevision\t: c03111\nSerial\t\t: 10000000abcdef01\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n";

    const PI3_ARMV7: &str = "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\nBogoMIPS\t: 38.40\n\
        Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\n\
        CPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\nCPU part\t: 0xd03\nCPU revision\t: 4\n\n\
        processor\t: 1\nmodel name\t: ARMv7 Processor rev 4 (v7l)\nCPU implementer\t: 0x41\nCPU part\t: 0xd03\n\n\
        Hardware\t: BCM2835\nRevision\t: a02082\nModel\t\t: Raspberry Pi 3 Model B Rev 1.2\n";

    fn gathered(name: &str, cpuinfo: &str, max_khz: Option<&str>) -> Entry {
        let root = root(name);
        write(&root, "/proc/cpuinfo", cpuinfo);
        write(&root, "/proc/sys/kernel/osrelease", "6.1.0-rpi7-rpi-v8\n");
        if let Some(khz) = max_khz {
            write(
                &root,
                "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",
                khz,
            );
        }
        gather(&Host {
            root: &root,
            agent_version: "1",
        })
        .unwrap()
    }

    fn expect(pairs: [(&str, &str); 8]) -> Entry {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn x86_facts_are_what_lscpu_reports() {
        let e = gathered("cpu-x86", &x86(), Some("3500000\n"));
        assert_eq!(
            e,
            expect([
                ("CPUModel", "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz"),
                ("CPUSpeedMHz", "2499"),
                ("CPUs", "8"),
                ("CPUSockets", "2"),
                ("CPUCores", "4"),
                ("CPUHyperThreadEnabled", "true"),
                ("OSServicePack", ""),
                ("KernelVersion", "6.1.0-rpi7-rpi-v8"),
            ])
        );
    }

    #[test]
    fn raspberry_pi_aarch64_names_the_core_and_takes_cpufreq() {
        let e = gathered("cpu-pi4", PI4_AARCH64, Some("1800000\n"));
        assert_eq!(
            e,
            expect([
                ("CPUModel", "Cortex-A72"),
                ("CPUSpeedMHz", "1800"),
                ("CPUs", "4"),
                ("CPUSockets", "1"),
                ("CPUCores", "4"),
                ("CPUHyperThreadEnabled", "false"),
                ("OSServicePack", ""),
                ("KernelVersion", "6.1.0-rpi7-rpi-v8"),
            ])
        );
    }

    #[test]
    fn raspberry_pi_armv7_without_cpufreq_has_no_speed() {
        let e = gathered("cpu-pi3", PI3_ARMV7, None);
        assert_eq!(
            e["CPUModel"], "Cortex-A53",
            "lscpu's name, not cpuinfo's `ARMv7 Processor`"
        );
        assert_eq!(e["CPUSpeedMHz"], "", "BogoMIPS is no clock speed");
        assert_eq!((e["CPUs"].as_str(), e["CPUCores"].as_str()), ("2", "2"));
    }

    #[test]
    fn unknown_cores_fall_back_to_cpuinfos_own_names() {
        let old_arm = "Processor\t: ARMv6-compatible processor rev 7 (v6l)\nprocessor\t: 0\n\
                       CPU implementer\t: 0x42\nCPU part\t: 0x00f\n";
        assert_eq!(
            facts(old_arm, None, "")["CPUModel"],
            "ARMv6-compatible processor rev 7 (v6l)"
        );
        let mips = "system type\t\t: MediaTek MT7621 ver:1 eco:3\nmachine\t\t\t: Xiaomi\n\
                    processor\t\t: 0\ncpu model\t\t: MIPS 1004Kc V2.15\nBogoMIPS\t\t: 586.13\n";
        assert_eq!(facts(mips, None, "")["CPUModel"], "MIPS 1004Kc V2.15");
    }

    #[test]
    fn a_root_without_cpuinfo_is_an_error_naming_the_file() {
        let root = root("cpu-none");
        let err = gather(&Host {
            root: &root,
            agent_version: "1",
        })
        .unwrap_err();
        assert!(err.0.contains("proc/cpuinfo is missing"), "{err}");
    }

    #[test]
    fn this_machine_counts_its_cpus() {
        let e = gather(&Host {
            root: Path::new("/"),
            agent_version: "1",
        })
        .unwrap();
        let n = std::thread::available_parallelism().map_or(0, |n| n.get());
        assert!(e["CPUs"].parse::<usize>().unwrap() >= n, "{e:?}");
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(e["KernelVersion"], release.trim());
    }
}
