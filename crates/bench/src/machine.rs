//! The machine a result was measured on, for the report: figures from two
//! machines are not comparable, and even one machine's depend on its load.

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub memory_total_kb: Option<u64>,
    pub kernel: String,
    /// Load averages (1, 5, 15 minutes) when the run started.
    pub load_average: String,
}

impl Machine {
    pub fn read() -> Machine {
        let text = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpu_model(&text("/proc/cpuinfo")).unwrap_or_else(|| "unknown".into()),
            memory_total_kb: memory_total_kb(&text("/proc/meminfo")),
            kernel: first_line(&text("/proc/sys/kernel/osrelease")),
            load_average: text("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        "unknown".into()
    } else {
        line.to_string()
    }
}

/// The first `model name` of `/proc/cpuinfo`.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// `MemTotal` of `/proc/meminfo`, in kB.
pub fn memory_total_kb(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_files() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: fpu\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(cpu_model("nothing here"), None);
        let meminfo = "MemTotal:       24567890 kB\nMemFree: 1 kB\n";
        assert_eq!(memory_total_kb(meminfo), Some(24_567_890));
        assert_eq!(memory_total_kb("MemTotal: lots"), None);
        assert_eq!(first_line(""), "unknown");
        assert_eq!(first_line("6.1.0\n"), "6.1.0");
    }

    #[test]
    fn this_machine_has_processors() {
        assert!(Machine::read().nproc >= 1);
    }
}
