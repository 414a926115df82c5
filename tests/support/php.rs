//! Test hosts that serve PHP the way production does: Debian's nginx in front of php-fpm with
//! OPcache on and `validate_timestamps=0`, serving `deploy_to/current/public` — run inside the
//! host's own mount namespace, so each host serves its own `/var/www`.
//!
//! And a probe that keeps requests going to every host and classifies each response.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Background, DEPLOY_TO, TestHost, wait_until};

/// How nginx tells php-fpm which file to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// `$realpath_root`: nginx resolves `current` per request, so each request names the
    /// release's real path (what ship's Laravel recipe sets).
    Realpath,
    /// `$document_root`: the path through the `current` link, as many guides write it.
    DocumentRoot,
}

/// nginx and php-fpm for one host; stopped when dropped.
pub struct PhpServer {
    _nginx: Background,
    _fpm: Background,
    pub addr: String,
    /// php-fpm's master's pid file (`kill -USR2 $(cat …)` reloads it gracefully).
    pub fpm_pid: PathBuf,
}

impl TestHost {
    /// Start php-fpm and nginx for this host on `port` of its address.
    pub fn serve_php(&self, port: u16, root: Root) -> PhpServer {
        let dir = self
            .www
            .parent()
            .expect("host dir")
            .join(format!("php-{port}"));
        std::fs::create_dir_all(dir.join("tmp")).expect("php dir");
        let d = dir.display();
        let fpm_conf = dir.join("fpm.conf");
        std::fs::write(
            &fpm_conf,
            format!(
                "[global]\npid = {d}/fpm.pid\nerror_log = {d}/fpm.log\ndaemonize = no\n\
                 [app]\nuser = root\ngroup = root\nlisten = {d}/fpm.sock\npm = static\n\
                 pm.max_children = 4\n\
                 php_admin_value[opcache.enable] = 1\n\
                 php_admin_value[opcache.validate_timestamps] = 0\n\
                 php_admin_value[error_log] = {d}/php-errors.log\n"
            ),
        )
        .expect("fpm.conf");
        let root_var = match root {
            Root::Realpath => "$realpath_root",
            Root::DocumentRoot => "$document_root",
        };
        let addr = format!("{}:{port}", self.address);
        let nginx_conf = dir.join("nginx.conf");
        std::fs::write(
            &nginx_conf,
            format!(
                "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\n\
                 pid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n\
                 fastcgi_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
                 uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
                 include /etc/nginx/mime.types;\n\
                 server {{\n    listen {addr};\n    root {DEPLOY_TO}/current/public;\n\
                 index index.php;\n\
                 location / {{ try_files $uri /index.php$is_args$args; }}\n\
                 location ~ \\.php$ {{\n      include /etc/nginx/fastcgi_params;\n\
                 fastcgi_param SCRIPT_FILENAME {root_var}$fastcgi_script_name;\n\
                 fastcgi_param DOCUMENT_ROOT {root_var};\n\
                 fastcgi_pass unix:{d}/fpm.sock;\n    }}\n  }}\n}}\n"
            ),
        )
        .expect("nginx.conf");
        let inside = |program: &str, args: &[&str]| -> Background {
            let child = Command::new("nsenter")
                .arg(format!(
                    "--mount=/proc/{}/ns/mnt",
                    self.sshd_pid().expect("sshd")
                ))
                .arg(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{program}: {e}"));
            Background(child)
        };
        let fpm = inside(
            &php_fpm(),
            &["-F", "-R", "-y", &fpm_conf.display().to_string()],
        );
        wait_until("php-fpm listens", Duration::from_secs(20), || {
            dir.join("fpm.sock").exists()
        });
        let nginx = inside("nginx", &["-c", &nginx_conf.display().to_string()]);
        wait_until("nginx listens", Duration::from_secs(20), || {
            TcpStream::connect(&addr).is_ok()
        });
        PhpServer {
            _nginx: nginx,
            _fpm: fpm,
            addr,
            fpm_pid: dir.join("fpm.pid"),
        }
    }
}

impl TestHost {
    /// Debian's Supervisor running the PHP example's queue worker (`php worker.php` in
    /// `deploy_to/current`, restarted whenever it exits), inside this host's namespace.
    pub fn supervise_worker(&self) -> Background {
        let dir = self.www.parent().expect("host dir").join("supervisor");
        std::fs::create_dir_all(&dir).expect("supervisor dir");
        let d = dir.display();
        let conf = dir.join("supervisord.conf");
        std::fs::write(
            &conf,
            format!(
                "[supervisord]\nnodaemon=true\nuser=root\nlogfile={d}/supervisord.log\n\
                 pidfile={d}/supervisord.pid\n\
                 [program:worker]\ncommand=php worker.php\ndirectory={DEPLOY_TO}/current\n\
                 autostart=true\nautorestart=true\nstartsecs=0\nstartretries=1000\n\
                 stopasgroup=true\nkillasgroup=true\n\
                 stdout_logfile={d}/worker.log\nredirect_stderr=true\n"
            ),
        )
        .expect("supervisord.conf");
        let child = Command::new("nsenter")
            .arg(format!(
                "--mount=/proc/{}/ns/mnt",
                self.sshd_pid().expect("sshd")
            ))
            .args(["supervisord", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("supervisord");
        Background(child)
    }

    /// The release the worker says it runs, if it said.
    pub fn worker_release(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.path("shared/worker.txt")).ok()?;
        text.split_whitespace().next().map(str::to_owned)
    }
}

/// Debian's php-fpm binary (`php-fpm8.2`, …).
fn php_fpm() -> String {
    let found = std::fs::read_dir("/usr/sbin")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("php-fpm"));
    found.expect("php-fpm (apt-get install php-fpm; scripts/test.sh does)")
}

/// One GET of `/`: the status and the body, or why there was none.
pub fn get(addr: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    // Chunked or not, the body's line is what matters: `release <id> <id> <id>`.
    let line = body
        .lines()
        .find(|l| l.starts_with("release "))
        .unwrap_or_default()
        .to_owned();
    Ok((status, line))
}

/// One response the probe got: when (Unix ns, this machine's clock), from which host, and the
/// release ids its body named (empty: a failure).
#[derive(Debug, Clone)]
pub struct Response {
    pub at_ns: u128,
    /// How long the request took, in microseconds.
    pub took_us: u64,
    pub host: usize,
    pub ids: Vec<String>,
    pub failed: Option<String>,
}

/// Requests to every address, one after another per address, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    log: Arc<Mutex<Vec<Response>>>,
}

impl Load {
    pub fn start(addrs: &[String]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<Vec<Response>>> = Arc::default();
        let threads = addrs
            .iter()
            .enumerate()
            .map(|(host, addr)| {
                let (stop, log, addr) = (stop.clone(), log.clone(), addr.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = std::time::Instant::now();
                        let r = get(&addr);
                        let took_us = t0.elapsed().as_micros() as u64;
                        let at_ns = now_ns();
                        let response = match r {
                            Ok((200, line)) => Response {
                                at_ns,
                                took_us,
                                host,
                                ids: line.split_whitespace().skip(1).map(str::to_owned).collect(),
                                failed: None,
                            },
                            Ok((status, _)) => Response {
                                at_ns,
                                took_us,
                                host,
                                ids: Vec::new(),
                                failed: Some(format!("HTTP {status}")),
                            },
                            Err(e) => Response {
                                at_ns,
                                took_us,
                                host,
                                ids: Vec::new(),
                                failed: Some(e),
                            },
                        };
                        if let Ok(mut l) = log.lock() {
                            l.push(response);
                        }
                    }
                })
            })
            .collect();
        Load { stop, threads, log }
    }

    /// Stop, and every response in the order they came.
    pub fn finish(self) -> Vec<Response> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let mut v = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        v.sort_by_key(|r| r.at_ns);
        v
    }
}

pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The counts the zero-downtime promise is about. `switches`: (switched at, Unix ns, the
/// release switched to) per run, in order. A response is stale when it names a release other
/// than the one switched to, more than `grace` after that switch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub requests: usize,
    pub failed: usize,
    pub mixed: usize,
    pub stale: usize,
}

pub fn tally(responses: &[Response], switches: &[(u128, String)], grace: Duration) -> Tally {
    let mut t = Tally::default();
    for r in responses {
        t.requests += 1;
        if r.failed.is_some() || r.ids.is_empty() {
            t.failed += 1;
            continue;
        }
        if r.ids.iter().any(|i| *i != r.ids[0]) {
            t.mixed += 1;
        }
        let latest = switches.iter().rev().find(|(at, _)| *at < r.at_ns);
        if let Some((at, id)) = latest {
            if r.at_ns > at + grace.as_nanos() && r.ids.iter().any(|i| i != id) {
                t.stale += 1;
            }
        }
    }
    t
}

/// Where the PHP example app is.
pub fn php_app() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/php-app")
}

/// Run ship with `args` and `--json` (it must succeed): the last host's switch instant (Unix ns,
/// this machine's clock, which the hosts share) and the release every host is now on (checked,
/// with no lock left).
pub fn switch(fleet: &super::Fleet, args: &[&str]) -> (u128, String) {
    let mut a = args.to_vec();
    a.push("--json");
    let run = fleet.ship(&a);
    assert_eq!(run.code, 0, "{}", run.all());
    let summary = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "finished")
        .map(|e| e["summary"].clone())
        .expect("a summary");
    let release = summary["release"].as_str().expect("release").to_owned();
    let at = summary["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter_map(|h| {
            h["switched_at_unix_ns"]
                .as_u64()
                .map(u128::from)
                .or_else(|| h["switched_at_unix_ns"].as_f64().map(|f| f as u128))
        })
        .max()
        .expect("switch instants");
    for h in &fleet.hosts {
        assert_eq!(
            h.current_id().as_deref(),
            Some(release.as_str()),
            "{}",
            h.name
        );
        assert!(!h.locked(), "{}", h.name);
    }
    (at, release)
}
