//! Real servers for the remote backend tests, on 127.0.0.1 and free
//! ports: OpenSSH's `sshd` with its SFTP subsystem, and Garage (an
//! S3-compatible object store). `scripts/install-test-servers.sh` installs
//! both; `.ci/run` and `scripts/test.sh` run it.
//!
//! Each server runs under a small shell supervisor that kills it when the
//! test process is gone, so no server outlives a test run. Tests that stop
//! a server in the middle of their work start their own instance; others
//! share one per test run, each with its own directory or bucket.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn find_program(name: &str, also: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(also.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
    {
        return path;
    }
    panic!(
        "{name} is not installed: run scripts/install-test-servers.sh (the remote backend tests need a real {name})"
    );
}

/// Starts `program args` under a supervisor shell that kills it when this
/// test process exits; returns the server's pid.
fn spawn_supervised(program: &Path, args: &[&str], log: &Path) -> u32 {
    let pid_file = log.with_extension("pid");
    let _ = fs::remove_file(&pid_file);
    let script = r#"
        log="$1"; pidfile="$2"; watch="$3"; shift 3
        "$@" >>"$log" 2>&1 &
        child=$!
        echo "$child" > "$pidfile"
        while kill -0 "$watch" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
        kill -9 "$child" 2>/dev/null
        pkill -9 -P "$child" 2>/dev/null
        exit 0
    "#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg("supervisor")
        .arg(log)
        .arg(&pid_file)
        .arg(std::process::id().to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut supervisor = cmd.spawn().expect("start supervisor");
    // Reaped when it ends (with the server), so no zombie stays.
    std::thread::spawn(move || supervisor.wait());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = fs::read_to_string(&pid_file) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not start",
            program.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills `pid` and every process below it (sshd's per-connection
/// processes are its children).
pub fn kill_tree(pid: u32) {
    let children = children_of(pid);
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    for c in children {
        kill_tree(c);
    }
}

/// Sends `signal` (`-STOP`, `-CONT`) to `pid` and every process below it.
pub fn signal_tree(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status();
    for c in children_of(pid) {
        signal_tree(c, signal);
    }
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children: Vec<u32> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let Some(after) = stat.rsplit_once(')').map(|x| x.1) else {
                continue;
            };
            if after.split_whitespace().nth(1) == Some(&pid.to_string()) {
                children.push(p);
            }
        }
    }
    children
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port}: {}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An sshd on 127.0.0.1 with a host key and a client key made for it, and
/// an ssh config file naming it by an alias.
pub struct Sshd {
    pub dir: TempDir,
    pub port: u16,
    pub pid: u32,
    /// `KURA_SSH_CONFIG` for clients: `Host <alias>` with port, user, key
    /// and a known_hosts file holding the host key.
    pub ssh_config: PathBuf,
    pub alias: String,
    /// The client's key, for restic's `-o sftp.command`.
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
}

impl Sshd {
    pub fn start() -> Self {
        let sshd = find_program("sshd", &["/usr/sbin"]);
        let keygen = find_program("ssh-keygen", &[]);
        let dir = TempDir::new().expect("tempdir");
        let d = dir.path();
        for (key, comment) in [("host_key", "host"), ("client_key", "client")] {
            run_ok(
                Command::new(&keygen)
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                    .arg(d.join(key)),
            );
        }
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("authorized keys");
        fs::create_dir_all("/run/sshd").expect("/run/sshd (privilege separation directory)");
        let port = free_port();
        let config = d.join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
                 StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nUsePAM no\nMaxSessions 50\nMaxStartups 50\n\
                 Subsystem sftp internal-sftp\n",
                dir = d.display()
            ),
        )
        .expect("sshd_config");
        let host_pub = fs::read_to_string(d.join("host_key.pub")).expect("host key");
        let known_hosts = d.join("known_hosts");
        fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}")).expect("known_hosts");
        let alias = format!("kura-test-{port}");
        let user = run_ok(Command::new("id").arg("-un")).trim().to_owned();
        let ssh_config = d.join("ssh_config");
        fs::write(
            &ssh_config,
            format!(
                "Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  \
                 IdentityFile {dir}/client_key\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {kh}\n\nHost 127.0.0.1\n  IdentityFile {dir}/client_key\n  \
                 IdentitiesOnly yes\n  UserKnownHostsFile {kh}\n",
                dir = d.display(),
                kh = known_hosts.display()
            ),
        )
        .expect("ssh_config");
        let log = d.join("sshd.log");
        let pid = spawn_supervised(
            &sshd,
            &[
                "-D",
                "-f",
                config.to_str().expect("utf-8"),
                "-E",
                log.to_str().expect("utf-8"),
            ],
            &d.join("supervisor.log"),
        );
        wait_for_port(port, "sshd", &log);
        Self {
            port,
            pid,
            ssh_config,
            alias,
            client_key: d.join("client_key"),
            known_hosts,
            dir,
        }
    }

    /// Stops the server and every connection it serves.
    pub fn stop(&self) {
        kill_tree(self.pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "sshd still listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes the server and its connections (SIGSTOP): connections stay
    /// open and new ones are accepted by the kernel, but nothing answers,
    /// as with a hung or overloaded host.
    pub fn pause(&self) {
        signal_tree(self.pid, "-STOP");
    }

    pub fn resume(&self) {
        signal_tree(self.pid, "-CONT");
    }

    /// Cuts every connection it serves (their processes die), as a network
    /// drop would; the server keeps listening.
    pub fn drop_connections(&self) {
        for child in children_of(self.pid) {
            kill_tree(child);
        }
    }

    /// Starts it again on the same port with the same keys.
    pub fn restart(&mut self) {
        let sshd = find_program("sshd", &["/usr/sbin"]);
        let d = self.dir.path();
        let log = d.join("sshd.log");
        self.pid = spawn_supervised(
            &sshd,
            &[
                "-D",
                "-f",
                d.join("sshd_config").to_str().expect("utf-8"),
                "-E",
                log.to_str().expect("utf-8"),
            ],
            &d.join("supervisor.log"),
        );
        wait_for_port(self.port, "sshd", &log);
    }

    /// A fresh directory on the server for one repository, and its URL
    /// by absolute path (`sftp://alias//abs/path`).
    pub fn new_repo_dir(&self, name: &str) -> (PathBuf, String) {
        let path = self.dir.path().join("repos").join(name);
        fs::create_dir_all(path.parent().expect("parent")).expect("repos dir");
        let url = format!("sftp://{}/{}", self.alias, path.display());
        (path, url)
    }

    /// Environment for the kura CLI.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "KURA_SSH_CONFIG".into(),
            self.ssh_config.display().to_string(),
        )]
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        kill_tree(self.pid);
    }
}

/// A single-node Garage on 127.0.0.1.
pub struct Garage {
    pub dir: TempDir,
    pub s3_port: u16,
    pub pid: u32,
    config: PathBuf,
    pub key_id: String,
    pub secret: String,
}

impl Garage {
    pub fn start() -> Self {
        let dir = TempDir::new().expect("tempdir");
        let d = dir.path();
        let (s3_port, rpc_port) = (free_port(), free_port());
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("random");
        let config = d.join("garage.toml");
        fs::write(
            &config,
            format!(
                "metadata_dir = \"{dir}/meta\"\ndata_dir = \"{dir}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                dir = d.display(),
                secret = hex::encode(secret)
            ),
        )
        .expect("garage.toml");
        let mut g = Self {
            pid: 0,
            s3_port,
            config,
            key_id: String::new(),
            secret: String::new(),
            dir,
        };
        g.launch();
        let node = g.cli(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().expect("node id").to_owned();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.cli(&["layout", "apply", "--version", "1"]);
        let key = g.cli(&["key", "create", "kura-test"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
                .unwrap_or_else(|| panic!("no {name} in {key}"))
        };
        g.key_id = field("Key ID:");
        g.secret = field("Secret key:");
        g
    }

    fn launch(&mut self) {
        let d = self.dir.path().to_path_buf();
        self.pid = spawn_supervised(
            &garage_program(),
            &["-c", self.config.to_str().expect("utf-8"), "server"],
            &d.join("garage.log"),
        );
        wait_for_port(self.s3_port, "garage", &d.join("garage.log"));
        // The RPC side answers a little after the S3 port opens.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(garage_program())
                .arg("-c")
                .arg(&self.config)
                .args(["node", "id", "-q"])
                .output()
                .expect("garage");
            if out.status.success() {
                break;
            }
            assert!(Instant::now() < deadline, "garage did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs a `garage` admin command and returns its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let garage = find_program("garage", &[&format!("{}/.cargo/bin", env_home())]);
        run_ok(Command::new(garage).arg("-c").arg(&self.config).args(args))
    }

    /// A new bucket the test key may read, write and own.
    pub fn bucket(&self, name: &str) -> String {
        self.cli(&["bucket", "create", name]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            name,
            "--key",
            "kura-test",
        ]);
        name.to_owned()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn stop(&self) {
        kill_tree(self.pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok() {
            assert!(Instant::now() < deadline, "garage still listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn restart(&mut self) {
        self.launch();
    }

    /// As [`Sshd::pause`].
    pub fn pause(&self) {
        signal_tree(self.pid, "-STOP");
    }

    pub fn resume(&self) {
        signal_tree(self.pid, "-CONT");
    }

    /// Environment for the kura CLI and the library (opendal reads the
    /// AWS variables).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            ("KURA_S3_ENDPOINT".into(), self.endpoint()),
            ("KURA_S3_REGION".into(), "garage".into()),
        ]
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        kill_tree(self.pid);
    }
}

fn garage_program() -> PathBuf {
    find_program("garage", &[&format!("{}/.cargo/bin", env_home())])
}

fn env_home() -> String {
    std::env::var("HOME").unwrap_or_else(|_| "/root".into())
}

/// The sshd shared by tests that do not stop it.
pub fn shared_sshd() -> &'static Sshd {
    static SSHD: OnceLock<Sshd> = OnceLock::new();
    SSHD.get_or_init(Sshd::start)
}

/// The Garage shared by tests that do not stop it.
pub fn shared_garage() -> &'static Garage {
    static GARAGE: OnceLock<Garage> = OnceLock::new();
    GARAGE.get_or_init(Garage::start)
}
