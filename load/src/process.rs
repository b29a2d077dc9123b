//! The server's CPU time and memory, read from `/proc` (Linux).

/// CPU time and resident memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessStats {
    pub cpu_secs: f64,
    pub rss_bytes: u64,
}

impl ProcessStats {
    pub fn read(pid: u32) -> Result<ProcessStats, String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("read /proc/{pid}/stat: {e}"))?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the ')'.
        let ticks = 100.0; // USER_HZ on Linux
        let cpu_secs = (field(11) + field(12)) as f64 / ticks;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok(ProcessStats {
            cpu_secs,
            rss_bytes: rss_kib * 1024,
        })
    }
}
