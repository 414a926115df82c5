//! Small helpers shared across modules: durations for humans, UTC timestamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `1.2s`, `350ms`, `2m05s`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    } else if ms < 86_400_000 {
        let m = d.as_secs() / 60;
        format!("{}h{:02}m", m / 60, m % 60)
    } else {
        let h = d.as_secs() / 3600;
        format!("{}d{:02}h", h / 24, h % 24)
    }
}

/// Civil UTC date and time (year, month, day, hour, minute, second) of a Unix time.
pub fn utc_parts(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A release id for this moment: UTC `YYYYMMDDHHMMSS`.
pub fn release_id_at(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(secs);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}")
}

/// RFC 3339 UTC timestamp, for journals and JSON.
pub fn rfc3339(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// The UTC time of day with milliseconds, `HH:MM:SS.mmm`, for log lines.
pub fn clock_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (_, _, _, h, mi, s) = utc_parts(now.as_secs());
    format!("{h:02}:{mi:02}:{s:02}.{:03}", now.subsec_millis())
}

/// Read back a timestamp written by [`rfc3339`] (`YYYY-MM-DDTHH:MM:SSZ`, UTC only).
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Howard Hinnant's days-from-civil algorithm.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).ok()
}

/// What `git ARGS` prints on this machine (trimmed), when it succeeds and prints something.
pub fn git_output(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// How a tarball is packed, as its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    Tar,
    Gzip,
    Zstd,
}

/// How the tarball an http(s) URL names is packed (by its path's ending), or why ship will not
/// download it, with a hint.
pub fn check_tarball_url(url: &str) -> Result<Packing, (String, String)> {
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        return Err((
            "not an http(s) URL".into(),
            "write the tarball's https:// URL (an object store, a CDN, a release asset)".into(),
        ));
    };
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err((
            "a URL cannot hold spaces or control characters".into(),
            "percent-encode them (%20)".into(),
        ));
    }
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    packing_of(path).ok_or_else(|| {
        (
            "the URL's path does not end in .tar.gz, .tgz, .tar.zst, .tzst or .tar".into(),
            "point it at the tarball itself; ship tells the compression by the name".into(),
        )
    })
}

/// How a tarball is packed, by the ending of its name or path (in any case); `None` when the
/// name is not a tarball's.
pub fn packing_of(name: &str) -> Option<Packing> {
    let name = name.to_ascii_lowercase();
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Some(Packing::Gzip)
    } else if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
        Some(Packing::Zstd)
    } else if name.ends_with(".tar") {
        Some(Packing::Tar)
    } else {
        None
    }
}

/// A SHA-256 digest as written in an inventory or on the command line (64 hex digits, either
/// case, an optional `sha256:` prefix), in lowercase; `None` if it is not one.
pub fn check_sha256(text: &str) -> Option<String> {
    let hex = text.trim();
    let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Let this process keep as many files open as the system allows it (the soft limit raised to
/// the hard one): every host of a run is a connection, and the usual soft limit of 1,024 would
/// stop a run of several hundred hosts. Nothing happens where it cannot be raised.
pub fn raise_open_files_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_is_raised_to_what_the_system_allows() {
        raise_open_files_limit();
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct passed to it.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
        assert_eq!(l.rlim_cur, l.rlim_max);
    }

    #[test]
    fn release_ids_are_utc_civil_time() {
        assert_eq!(release_id_at(0), "19700101000000");
        assert_eq!(release_id_at(951_782_400), "20000229000000");
        assert_eq!(release_id_at(1_795_319_788), "20261122035628");
        assert_eq!(rfc3339(1_795_319_788), "2026-11-22T03:56:28Z");
    }

    #[test]
    fn timestamps_read_back() {
        for t in [0, 951_782_400, 1_795_319_788, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-11-22 03:56:28"), None);
    }

    #[test]
    fn durations_for_humans() {
        assert_eq!(human_duration(Duration::from_millis(350)), "350ms");
        assert_eq!(human_duration(Duration::from_millis(1250)), "1.2s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(human_duration(Duration::from_secs(90_000)), "1d01h");
    }
}
