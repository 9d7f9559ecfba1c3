//! This process's own resource use (CPU seconds, peak resident memory),
//! read from Linux's `/proc`: the sync report and the benchmark show them.

/// CPU seconds (user + system) this process has used (Linux `/proc`).
pub fn cpu_secs() -> Option<f64> {
    process_cpu_secs("self")
}

/// CPU seconds (user + system) used by process `pid` ("self" for this one).
pub fn process_cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15 (1-based).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture georep builds for.
    Some((utime + stime) as f64 / 100.0)
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_and_cpu_are_known_on_linux() {
        assert!(peak_rss_bytes().unwrap() > 0);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 60 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(cpu_secs().unwrap() > 0.0, "{x}");
    }
}
