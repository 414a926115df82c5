//! The fleet benchmark: N real sshd hosts on loopback (the test harness's), the example app
//! with a 1 s build, K deploys per N. Prints, per N: wall time (median, min, max), ship's
//! overhead over the build, the switch spread measured on the hosts (their own clocks, which
//! here are one) and as ship reports it, SSH connections per host (sshd logs), the controller's peak
//! RSS and CPU time, and the bytes sent. Figures only: nothing here passes or fails on time.
//!
//! `bench/run.sh [--hosts 1,5,20] [--runs 3]` (root: sshd in mount namespaces).

#[path = "../tests/support/mod.rs"]
mod support;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::Fleet;

const BUILD_SECONDS: f64 = 1.0;

struct Run {
    wall: f64,
    ship_skew_ms: Option<f64>,
    host_spread_ms: f64,
    peak_rss_kb: u64,
    cpu_s: f64,
    /// CPU time the whole machine spent during the deploy (ship, and the hosts' sshd, shells
    /// and steps on the same cores), in seconds.
    machine_cpu_s: f64,
    phases: String,
}

/// The machine's busy CPU time so far (all CPUs, from /proc/stat), in seconds.
fn machine_busy_s() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy: f64 = v.iter().sum::<f64>() - v.get(3).unwrap_or(&0.0) - v.get(4).unwrap_or(&0.0);
    // SAFETY: sysconf only reads a system setting.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    busy / tick.max(1.0)
}

/// Wait for the child `pid` to exit: its exact end, and from the kernel's own accounting its
/// peak RSS (kB) and CPU seconds (user + system). No polling, so the wall time has no sampling
/// error in it.
fn wait_for(pid: u32) -> (Instant, u64, f64) {
    let mut status = 0;
    // SAFETY: rusage is plain data, filled in by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child and writes into the two locals above.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r == pid as libc::pid_t {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            panic!("wait4: {}", std::io::Error::last_os_error());
        }
    }
    let end = Instant::now();
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = secs(usage.ru_utime) + secs(usage.ru_stime);
    (end, usage.ru_maxrss as u64, cpu)
}

/// Wait until every host is back to the processes it had when idle (the previous deploy's
/// sessions have ended and their processes exited), then a moment more: each deploy starts on
/// a quiet fleet, as deploys minutes apart do, instead of sharing the CPUs with the previous
/// deploy's teardown.
fn settle(fleet: &Fleet, idle: &[usize]) {
    fleet.wait_idle(idle, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
}

/// Deploy as `user` (not root): a user of that name on every host, owning the deploy dir.
fn as_user(fleet: &Fleet, user: &str) {
    if user == "root" {
        return;
    }
    const UID: u32 = 2301;
    for h in &fleet.hosts {
        h.add_users(&[(user, UID)], "");
        let app = h.path("");
        std::fs::create_dir_all(&app).expect("deploy dir");
        std::os::unix::fs::chown(&app, Some(UID), Some(UID)).expect("chown");
    }
    fleet.edit_inventory(|t| t.replace("user: root", &format!("user: {user}")));
}

/// `n` bytes that do not compress (xorshift), for the upload measurement.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Upload throughput on one connection: the same packed artifact (the bytes ship sends) piped
/// through OpenSSH's client into `tar -xz` on the host, and ship's own upload step.
/// The example app with `mb` MiB of incompressible data in it, made the fleet's source.
fn big_app(fleet: &Fleet, mb: usize) -> std::path::PathBuf {
    let app = fleet.dir().join("big-app");
    std::fs::create_dir_all(app.join("public")).expect("app");
    for f in ["build.sh", "public/index.html"] {
        std::fs::copy(Fleet::example_app().join(f), app.join(f)).expect("copy");
    }
    std::fs::write(app.join("public/big.bin"), noise(mb << 20)).expect("big file");
    fleet.set_source(&format!("{{ artifact: {} }}", app.display()));
    app
}

fn upload_throughput(mb: usize, runs: usize, user: &str) {
    let fleet = Fleet::start(1);
    fleet.inventory("", "");
    as_user(&fleet, user);
    let app = big_app(&fleet, mb);
    let payload = ship::source::pack_dir(&app).expect("pack");
    let file = fleet.dir().join("artifact.tar.gz");
    std::fs::write(&file, &payload).expect("artifact");
    let mut openssh = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let out = fleet
            .openssh(user, 0)
            .arg(
                "d=/var/www/app/.bench-upload; rm -rf $d && mkdir -p $d && tar -xzf - -C $d \
                 && rm -rf $d",
            )
            .stdin(std::fs::File::open(&file).expect("artifact"))
            .output()
            .expect("ssh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        openssh.push(t0.elapsed().as_secs_f64());
    }
    let mut ship_upload = Vec::new();
    for _ in 0..runs {
        let out = Command::new(env!("CARGO_BIN_EXE_ship"))
            .args(["deploy", "production", "--json"])
            .current_dir(fleet.dir())
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .output()
            .expect("ship");
        let text = String::from_utf8_lossy(&out.stdout);
        let ms = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "step_finished" && e["step"] == "upload")
            .and_then(|e| e["elapsed_ms"].as_f64())
            .expect("an upload step");
        ship_upload.push(ms / 1000.0);
    }
    let size = payload.len() as f64 / (1 << 20) as f64;
    let (o, s) = (median(&mut openssh), median(&mut ship_upload));
    println!(
        "\nupload, one connection, {size:.1} MiB packed ({mb} MiB of incompressible data), \
         median of {runs}:"
    );
    println!(
        "  OpenSSH `ssh host 'tar -xz -C dir' < artifact`: {o:.2} s  {:.0} MiB/s",
        size / o
    );
    println!(
        "  ship's upload step (stream + tar -xz):          {s:.2} s  {:.0} MiB/s  ({:.2}x OpenSSH)",
        size / s,
        o / s
    );
}

#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait_for (wait4), which also reads its resource use"
)]
fn deploy(fleet: &Fleet) -> Run {
    let busy0 = machine_busy_s();
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ship"))
        .args(["deploy", "production", "--json"])
        .current_dir(fleet.dir())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ship");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = String::new();
        let mut r = stdout;
        let _ = r.read_to_string(&mut s);
        s
    });
    let (end, peak_rss_kb, cpu_s) = wait_for(child.id());
    let machine_cpu_s = machine_busy_s() - busy0;
    let wall = (end - t0).as_secs_f64();
    let out = reader.join().unwrap_or_default();
    let summary = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "finished")
        .map(|e| e["summary"].clone())
        .unwrap_or_default();
    assert_eq!(
        summary["outcome"], "deployed",
        "the benchmark deploy failed: {out}"
    );
    // The hosts' own clocks right after their renames, as each reported it: here they all share
    // this machine's clock, so their spread is the true switch spread, with no estimate in it
    // (ship's own figure puts each host's clock on the controller's with a measured offset).
    let reported: std::collections::HashMap<String, i128> = summary["hosts"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter_map(|h| {
                    let ns = h["switched_at_unix_ns"].as_u64()?;
                    Some((h["host"].as_str()?.to_owned(), i128::from(ns)))
                })
                .collect()
        })
        .unwrap_or_default();
    // A cross-check the hosts' kernels keep: a rename sets the `current` link's ctime (from the
    // coarse clock, a tick behind at most).
    // On a loaded machine a host can be descheduled between its rename and its clock read:
    // the largest gap is printed, and a gap beyond 20 ms is named.
    let mut stamp_gap_ns: i128 = 0;
    let stamps: Vec<i128> = fleet
        .hosts
        .iter()
        .map(|h| {
            let ns = *reported.get(&h.name).expect("a switch stamp per host");
            let m = std::fs::symlink_metadata(h.path("current")).expect("current");
            let ctime = i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec());
            if (ns - ctime).abs() > 20_000_000 {
                eprintln!(
                    "  note: {}: the link changed at {ctime}, the host read its clock at {ns}",
                    h.name
                );
            }
            stamp_gap_ns = stamp_gap_ns.max((ns - ctime).abs());
            ns
        })
        .collect();
    if stamp_gap_ns > 20_000_000 {
        eprintln!(
            "  note: largest gap between a rename (ctime) and the host's clock read: {:.1} ms",
            stamp_gap_ns as f64 / 1e6
        );
    }
    let spread =
        stamps.iter().max().copied().unwrap_or(0) - stamps.iter().min().copied().unwrap_or(0);
    let phases = summary["phases"]
        .as_array()
        .map(|p| {
            p.iter()
                .map(|x| format!("{} {}", x["phase"].as_str().unwrap_or("?"), x["ms"]))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Run {
        wall,
        ship_skew_ms: summary["flip_skew_ms"].as_f64(),
        host_spread_ms: spread as f64 / 1e6,
        peak_rss_kb,
        cpu_s,
        machine_cpu_s,
        phases,
    }
}

/// `n` hosts with the example app's inventory (build of BUILD_SECONDS), deployed to as `user`.
fn bench_fleet(n: usize, user: &str) -> Fleet {
    let fleet = Fleet::start(n);
    fleet.inventory(
        &format!("  env:\n    BUILD_SECONDS: \"{BUILD_SECONDS}\"\n"),
        "",
    );
    as_user(&fleet, user);
    // Keep the releases few, so every run does the same work.
    fleet.edit_inventory(|t| t.replace("keep_releases: 3", "keep_releases: 2"));
    fleet
}

/// The filesystem the hosts' files live on (where the fleet's temporary directory is made):
/// its type, device and, for ext4, whether it has a journal. Without one, ext4 scans recently
/// deleted inodes on every file it creates, which makes file creation cost about a millisecond
/// here (see docs/performance.md).
fn hosts_disk() -> String {
    let dir = std::env::temp_dir();
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return format!("{} (filesystem unknown)", dir.display());
    };
    // The mount with the longest mount point that contains the directory.
    let mount = info
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            let mut r = right.split_whitespace();
            let (fstype, source) = (r.next()?, r.next()?);
            dir.starts_with(point).then_some((point, fstype, source))
        })
        .max_by_key(|(point, _, _)| point.len());
    let Some((point, fstype, source)) = mount else {
        return format!("{} (filesystem unknown)", dir.display());
    };
    let journal = if fstype == "ext4" {
        let dev = source.rsplit('/').next().unwrap_or(source);
        let journaled = std::fs::read_dir("/proc/fs/jbd2")
            .map(|d| {
                d.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{dev}-"))
                })
            })
            .unwrap_or(false);
        if journaled {
            ", with a journal"
        } else {
            ", no journal: a file created scans the inodes its block group lost lately"
        }
    } else {
        ""
    };
    format!(
        "{} on {fstype} ({source} at {point}{journal})",
        dir.display()
    )
}

/// What creating a file costs in host 0's deploy directory now, in µs (the median of 21 directory
/// creations): a few µs on a quiet filesystem, hundreds where ext4 without a journal has many
/// recently deleted inodes to skip.
fn creation_us(fleet: &Fleet) -> f64 {
    let dir = fleet.hosts[0].www.join(".bench-probe");
    let mut us: Vec<f64> = (0..21)
        .map(|i| {
            let d = dir.with_extension(i.to_string());
            let t = Instant::now();
            let made = std::fs::create_dir(&d).is_ok();
            let e = t.elapsed().as_secs_f64() * 1e6;
            if made {
                let _ = std::fs::remove_dir(&d);
            }
            e
        })
        .collect();
    median(&mut us)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `--bastion N`: N hosts reached directly, then all of them through one bastion whose sshd
/// has OpenSSH's stock settings (`MaxStartups 10:30:100`, `MaxSessions 10`), `runs` deploys
/// each way: the wall times side by side and the bastion's logins per deploy.
fn bastion(n: usize, runs: usize, user: &str, artifact_mb: usize) {
    let mut fleet = bench_fleet(n + 1, user);
    if artifact_mb > 0 {
        big_app(&fleet, artifact_mb);
    }
    let idle = fleet.process_counts();
    let walls = |fleet: &Fleet| -> f64 {
        let mut w: Vec<f64> = (0..runs)
            .map(|_| {
                settle(fleet, &idle);
                deploy(fleet).wall
            })
            .collect();
        median(&mut w)
    };
    let direct = walls(&fleet);
    {
        let b = &mut fleet.hosts[0];
        let config = b.www.parent().expect("host dir").join("sshd_config");
        let text = std::fs::read_to_string(&config).expect("sshd_config");
        std::fs::write(
            &config,
            text.replace("MaxStartups 1000\n", "")
                .replace("MaxSessions 100\n", ""),
        )
        .expect("sshd_config");
        b.restart();
        let mut users = vec![("jump", 2103)];
        if user != "root" {
            users.push((user, 2301));
        }
        b.add_users(&users, "");
    }
    let gate = fleet.hosts[0].address.clone();
    for i in 1..=n {
        fleet.host_settings(i, &format!("proxy_jump: jump@{gate}"));
    }
    let before = fleet.logins(0, "jump");
    let through = walls(&fleet);
    let logins = (fleet.logins(0, "jump") - before) as f64 / runs as f64;
    let artifact = if artifact_mb > 0 {
        format!(", an artifact with {artifact_mb} MiB of incompressible data")
    } else {
        String::new()
    };
    println!(
        "{n} hosts{artifact}, {runs} deploys each way: direct {direct:.2} s, through one bastion \
         with stock MaxStartups/MaxSessions {through:.2} s ({:.2}x), {logins:.1} login(s) to the \
         bastion per deploy",
        through / direct
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| support::arg(&args, name, default);
    let sizes: Vec<usize> = arg("--hosts", "1,5,20")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = arg("--runs", "3").parse().unwrap_or(3);
    // `deploy`: a provisioned deploy user (login shell /bin/sh, no rc files), as on a server
    // set up for deploys. `root`: this machine's root, whose shell start-up is what it is here.
    let user = arg("--user", "deploy");
    support::MACHINE_ROOT_HOME.store(user == "root", std::sync::atomic::Ordering::SeqCst);
    // `--hold N`: start N hosts ready to deploy to, print where, and keep them up until Enter,
    // for profiling a deploy by hand (strace, perf) instead of measuring it.
    if let Some(n) = args
        .iter()
        .position(|a| a == "--bastion")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<usize>().ok())
    {
        let mb = arg("--artifact-mb", "0").parse().unwrap_or(0);
        bastion(n, runs, &user, mb);
        return;
    }
    if let Some(n) = args
        .iter()
        .position(|a| a == "--hold")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<usize>().ok())
    {
        let fleet = bench_fleet(n, &user);
        println!(
            "{n} hosts up; deploy with:\n  cd {} && {} deploy production\nsshd pids: {:?}\n\
             press Enter to stop them",
            fleet.dir().display(),
            env!("CARGO_BIN_EXE_ship"),
            fleet.hosts.iter().map(|h| h.sshd_pid()).collect::<Vec<_>>()
        );
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return;
    }
    let payload = ship::source::pack_dir(&Fleet::example_app())
        .map(|p| p.len())
        .unwrap_or(0);
    println!(
        "ship fleet benchmark: example app, build {BUILD_SECONDS} s, {runs} deploys per size, \
         artifact {payload} bytes (packed once), as user {user}\nhosts' files: {}",
        hosts_disk()
    );
    println!(
        "{:>5}  {:>22}  {:>9}  {:>12}  {:>12}  {:>10}  {:>8}  {:>7}  {:>9}",
        "hosts",
        "wall s (med/min/max)",
        "overhead",
        "host spread",
        "ship skew",
        "conn/host",
        "peak RSS",
        "CPU s",
        "sent B"
    );
    for &n in &sizes {
        let fleet = bench_fleet(n, &user);
        let before: Vec<usize> = (0..n).map(|i| fleet.connections(i)).collect();
        let idle = fleet.process_counts();
        let results: Vec<Run> = (0..runs)
            .map(|_| {
                settle(&fleet, &idle);
                deploy(&fleet)
            })
            .collect();
        let conns: Vec<usize> = (0..n).map(|i| fleet.connections(i) - before[i]).collect();
        let per_host = conns.iter().sum::<usize>() as f64 / (n * runs) as f64;
        let mut walls: Vec<f64> = results.iter().map(|r| r.wall).collect();
        let (min, max) = (
            walls.iter().copied().fold(f64::MAX, f64::min),
            walls.iter().copied().fold(0.0, f64::max),
        );
        let med = median(&mut walls);
        let mut spreads: Vec<f64> = results.iter().map(|r| r.host_spread_ms).collect();
        let mut skews: Vec<f64> = results.iter().filter_map(|r| r.ship_skew_ms).collect();
        let rss = results.iter().map(|r| r.peak_rss_kb).max().unwrap_or(0);
        let mut cpu: Vec<f64> = results.iter().map(|r| r.cpu_s).collect();
        println!(
            "{n:>5}  {:>22}  {:>8.2}s  {:>9.2} ms  {:>9.2} ms  {per_host:>10.1}  {:>5} MB  {:>7.2}  {:>7}",
            format!("{med:.2} / {min:.2} / {max:.2}"),
            med - BUILD_SECONDS,
            median(&mut spreads),
            if skews.is_empty() {
                f64::NAN
            } else {
                median(&mut skews)
            },
            rss / 1024,
            median(&mut cpu),
            payload * n,
        );
        if let Some(r) = results.last() {
            println!(
                "       phases (last run, ms): {}; a file created on a host: {:.0} µs",
                r.phases,
                creation_us(&fleet)
            );
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            println!(
                "       CPU (last run): {:.2} s busy on this machine of {:.2} s its {cores} cores \
                 had; ship {:.2} s ({:.1} ms per host), the hosts (sshd, shells, steps) the rest",
                r.machine_cpu_s,
                r.wall * cores,
                r.cpu_s,
                r.cpu_s * 1000.0 / n as f64
            );
        }
    }
    let upload_mb: usize = arg("--upload-mb", "64").parse().unwrap_or(64);
    if upload_mb > 0 {
        upload_throughput(upload_mb, runs, &user);
    }
}
