//! How much the host agent's relay costs, against going direct and against haproxy (TCP
//! mode) and nginx (`stream {}`), all on loopback in one run.
//!
//! One backend (in this process) serves three modes chosen by the connection's first
//! byte: `U` sinks an upload and answers its byte count, `D` sends the number of bytes
//! asked for, `E` echoes. Each peer (direct, cocoon, haproxy, nginx) is measured the
//! same way: (a) throughput of one bulk stream, upload (client to backend) and download
//! (backend to client) separately; (b) round trips of small messages on one connection,
//! and (c) a new connection per request (connect, one round trip, close), p50 and p99.
//! A peer that is missing is reported as skipped with the reason.
//!
//! `cargo run --release --locked -p cocoon-host-agent --example relay-bench [-- --help]`;
//! the relay is the `cocoon-host-agent` binary next to this example's directory (build it
//! first, `make build`), or `--agent PATH`. The relay runs with `RUST_LOG=warn`, as
//! haproxy and nginx run here without access logs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

#[derive(Parser)]
#[command(about = "Relay overhead: direct vs cocoon-host-agent relay vs haproxy vs nginx")]
struct Args {
    /// The cocoon-host-agent binary (default: next to this example's directory).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// MiB per bulk stream, in each direction.
    #[arg(long, default_value_t = 2048)]
    bulk_mib: u64,
    /// Bulk streams per direction and peer; the median is reported (loopback on a shared
    /// machine is noisy).
    #[arg(long, default_value_t = 3)]
    bulk_repeats: usize,
    /// Round trips on one connection.
    #[arg(long, default_value_t = 20_000)]
    round_trips: usize,
    /// Requests with a new connection each.
    #[arg(long, default_value_t = 3_000)]
    connections: usize,
    /// Bytes per request and per response in the latency tests.
    #[arg(long, default_value_t = 64)]
    message_bytes: usize,
}

/// Bytes per socket read or write in the bulk tests.
const CHUNK: usize = 256 * 1024;
/// How long a peer may take to start listening.
const START_BOUND: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let backend = TcpListener::bind("127.0.0.1:0").await?;
    let backend_address = backend.local_addr()?;
    tokio::spawn(serve_backend(backend));
    let scratch = Scratch::new()?;

    let mut results = Vec::new();
    results.push(measure("direct", Ok(backend_address), &args).await);
    let agent = start_cocoon(&args, backend_address).await;
    results.push(measure("cocoon", agent.as_ref().map(|p| p.address), &args).await);
    drop(agent);
    let haproxy = start_haproxy(&scratch, backend_address).await;
    results.push(measure("haproxy", haproxy.as_ref().map(|p| p.address), &args).await);
    drop(haproxy);
    let nginx = start_nginx(&scratch, backend_address).await;
    results.push(measure("nginx", nginx.as_ref().map(|p| p.address), &args).await);
    drop(nginx);

    print!("{}", report(&args, &results));
    Ok(())
}

// ---- the backend ----

async fn serve_backend(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            // A failed connection is the client's to report.
            let _ = backend_connection(stream).await;
        });
    }
}

async fn backend_connection(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    if stream.read(&mut mode).await? == 0 {
        return Ok(()); // a readiness probe
    }
    let mut buf = vec![0x5a; CHUNK];
    match mode[0] {
        b'U' => {
            let mut total = 0u64;
            loop {
                match stream.read(&mut buf).await? {
                    0 => break,
                    n => total += n as u64,
                }
            }
            stream.write_all(&total.to_be_bytes()).await?;
        }
        b'D' => {
            let mut wanted = [0u8; 8];
            stream.read_exact(&mut wanted).await?;
            let mut left = u64::from_be_bytes(wanted);
            while left > 0 {
                let n = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
                stream.write_all(&buf[..n]).await?;
                left -= n as u64;
            }
        }
        _ => loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            stream.write_all(&buf[..n]).await?;
        },
    }
    stream.shutdown().await
}

// ---- the peers ----

/// A proxy in front of the backend; killed on drop.
struct Peer {
    address: SocketAddr,
    _child: Child,
}

/// Why a peer was not measured.
type Skipped = String;

/// A directory for generated configs and logs, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("cocoon-relay-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_cocoon(args: &Args, backend: SocketAddr) -> Result<Peer, Skipped> {
    let agent = match &args.agent {
        Some(path) => path.clone(),
        None => default_agent().map_err(|e| e.to_string())?,
    };
    if !agent.is_file() {
        return Err(format!(
            "no agent binary at {} (make build, or --agent PATH)",
            agent.display()
        ));
    }
    let mut child = Command::new(&agent)
        .args(["relay", "--listen", "127.0.0.1:0", "--guest"])
        .arg(backend.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", agent.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(START_BOUND, lines.next_line())
        .await
        .map_err(|_| "no ready line within 10 s".to_string())?
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let address = line
        .strip_prefix("cocoon-host-agent: relaying ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|address| address.parse().ok())
        .ok_or_else(|| format!("unexpected ready line {line:?}"))?;
    Ok(Peer {
        address,
        _child: child,
    })
}

/// `cocoon-host-agent` in the target directory above this example's own.
fn default_agent() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the example is not in a target directory")?;
    Ok(profile_dir.join("cocoon-host-agent"))
}

async fn start_haproxy(scratch: &Scratch, backend: SocketAddr) -> Result<Peer, Skipped> {
    let binary = find_program("haproxy").ok_or("haproxy is not installed")?;
    let port = free_port().map_err(|e| e.to_string())?;
    let config = scratch.0.join("haproxy.cfg");
    let text = format!(
        "global\n  maxconn 8192\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
         timeout client 300s\n  timeout server 300s\n\nfrontend relay\n  bind 127.0.0.1:{port}\n  \
         default_backend guest\n\nbackend guest\n  server backend {backend}\n"
    );
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let child = Command::new(binary)
        .arg("-f")
        .arg(&config)
        .arg("-db")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start haproxy: {e}"))?;
    listening(child, port).await
}

async fn start_nginx(scratch: &Scratch, backend: SocketAddr) -> Result<Peer, Skipped> {
    let binary = find_program("nginx").ok_or("nginx is not installed")?;
    let load = stream_module(&binary)?;
    let port = free_port().map_err(|e| e.to_string())?;
    let dir = &scratch.0;
    let config = dir.join("nginx.conf");
    let text = format!(
        "{load}daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\n\
         error_log {dir}/nginx-error.log warn;\nevents {{ worker_connections 8192; }}\n\
         stream {{\n  server {{\n    listen 127.0.0.1:{port};\n    proxy_pass {backend};\n    \
         proxy_connect_timeout 5s;\n    proxy_timeout 300s;\n    proxy_half_close on;\n  }}\n}}\n",
        dir = dir.display()
    );
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&config)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start nginx: {e}"))?;
    listening(child, port).await
}

/// The `load_module` line nginx needs for `stream {}`, empty if built in.
fn stream_module(nginx: &Path) -> Result<String, Skipped> {
    let output = std::process::Command::new(nginx)
        .arg("-V")
        .output()
        .map_err(|e| format!("nginx -V: {e}"))?;
    let configure = String::from_utf8_lossy(&output.stderr).into_owned();
    if configure.contains("--with-stream ") || configure.ends_with("--with-stream") {
        return Ok(String::new());
    }
    if !configure.contains("--with-stream=dynamic") {
        return Err("nginx is built without the stream module".into());
    }
    let modules = configure
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("--modules-path="))
        .unwrap_or("/usr/lib/nginx/modules");
    let module = Path::new(modules).join("ngx_stream_module.so");
    if !module.is_file() {
        return Err(format!(
            "nginx's stream module is dynamic and {} is missing (apt-get install libnginx-mod-stream)",
            module.display()
        ));
    }
    Ok(format!("load_module {};\n", module.display()))
}

/// `name` in the usual system directories or on `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A loopback port nobody listens on (bound, then let go).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until the peer accepts on `port`, or reports how it failed.
async fn listening(mut child: Child, port: u16) -> Result<Peer, Skipped> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let began = Instant::now();
    loop {
        if TcpStream::connect(address).await.is_ok() {
            return Ok(Peer {
                address,
                _child: child,
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited at start ({status})"));
        }
        if began.elapsed() > START_BOUND {
            return Err(format!("not listening on {address} within 10 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- the measurements ----

/// One peer's figures.
struct Figures {
    upload_mbps: f64,
    download_mbps: f64,
    /// Round trips on one connection, µs.
    round_trip: Percentiles,
    /// Connect, one round trip, close, µs.
    per_connection: Percentiles,
}

#[derive(Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
}

struct Measured {
    name: &'static str,
    figures: Result<Figures, Skipped>,
}

async fn measure(
    name: &'static str,
    address: Result<SocketAddr, &Skipped>,
    args: &Args,
) -> Measured {
    let figures = match address {
        Ok(address) => figures(address, args)
            .await
            .map_err(|e| format!("failed: {e:#}")),
        Err(why) => Err(why.clone()),
    };
    match &figures {
        Ok(_) => eprintln!("relay-bench: measured {name}"),
        Err(why) => eprintln!("relay-bench: {name} skipped: {why}"),
    }
    Measured { name, figures }
}

async fn figures(address: SocketAddr, args: &Args) -> anyhow::Result<Figures> {
    let bytes = args.bulk_mib * 1024 * 1024;
    // Warm up the path (page cache, connection tables, the proxy's buffers).
    upload(address, bytes.min(64 << 20)).await?;
    download(address, bytes.min(64 << 20)).await?;
    let (mut uploads, mut downloads) = (Vec::new(), Vec::new());
    for _ in 0..args.bulk_repeats.max(1) {
        uploads.push(upload(address, bytes).await?);
        downloads.push(download(address, bytes).await?);
    }
    Ok(Figures {
        upload_mbps: median(uploads),
        download_mbps: median(downloads),
        round_trip: round_trips(address, args.round_trips, args.message_bytes).await?,
        per_connection: per_connection(address, args.connections, args.message_bytes).await?,
    })
}

async fn connect(address: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connect to {address}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `bytes` to the backend; MB/s (10^6 bytes) until the backend confirmed the count.
async fn upload(address: SocketAddr, bytes: u64) -> anyhow::Result<f64> {
    let began = Instant::now();
    let mut stream = connect(address).await?;
    stream.write_all(b"U").await?;
    let buf = vec![0xa5; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
        stream.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    stream.shutdown().await?;
    let mut count = [0u8; 8];
    stream.read_exact(&mut count).await?;
    if u64::from_be_bytes(count) != bytes {
        bail!(
            "the backend counted {} bytes of {bytes}",
            u64::from_be_bytes(count)
        );
    }
    Ok(bytes as f64 / began.elapsed().as_secs_f64() / 1e6)
}

/// Fetches `bytes` from the backend; MB/s until EOF.
async fn download(address: SocketAddr, bytes: u64) -> anyhow::Result<f64> {
    let began = Instant::now();
    let mut stream = connect(address).await?;
    let mut request = vec![b'D'];
    request.extend_from_slice(&bytes.to_be_bytes());
    stream.write_all(&request).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        match stream.read(&mut buf).await? {
            0 => break,
            n => got += n as u64,
        }
    }
    if got != bytes {
        bail!("received {got} bytes of {bytes}");
    }
    Ok(bytes as f64 / began.elapsed().as_secs_f64() / 1e6)
}

/// `count` round trips of `size` bytes on one connection.
async fn round_trips(
    address: SocketAddr,
    count: usize,
    size: usize,
) -> anyhow::Result<Percentiles> {
    let mut stream = connect(address).await?;
    stream.write_all(b"E").await?;
    let message = vec![0x42; size];
    let mut answer = vec![0u8; size];
    let mut micros = Vec::with_capacity(count);
    for _ in 0..count {
        let began = Instant::now();
        stream.write_all(&message).await?;
        stream.read_exact(&mut answer).await?;
        micros.push(began.elapsed().as_secs_f64() * 1e6);
    }
    Ok(percentiles(micros))
}

/// `count` requests, each on a new connection: connect, one round trip, close.
async fn per_connection(
    address: SocketAddr,
    count: usize,
    size: usize,
) -> anyhow::Result<Percentiles> {
    let mut request = vec![b'E'];
    request.resize(1 + size, 0x42);
    let mut answer = vec![0u8; size];
    let mut micros = Vec::with_capacity(count);
    for _ in 0..count {
        let began = Instant::now();
        let mut stream = connect(address).await?;
        stream.write_all(&request).await?;
        stream.read_exact(&mut answer).await?;
        micros.push(began.elapsed().as_secs_f64() * 1e6);
    }
    Ok(percentiles(micros))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentiles(mut micros: Vec<f64>) -> Percentiles {
    micros.sort_by(f64::total_cmp);
    let at = |q: usize| {
        micros
            .get((micros.len() * q / 100).min(micros.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Percentiles {
        p50: at(50),
        p99: at(99),
    }
}

// ---- the report ----

fn report(args: &Args, results: &[Measured]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nrelay-bench (loopback; MB/s = 10^6 bytes/s, median of {} bulk streams of {} MiB per \
         direction: upload = client to backend, download = backend to client; {} round trips \
         of {} bytes on one connection; {} new connections with one round trip each; \
         latencies in µs)\n",
        args.bulk_repeats.max(1),
        args.bulk_mib,
        args.round_trips,
        args.message_bytes,
        args.connections
    );
    let _ = writeln!(
        out,
        "{:<8} {:>12} {:>14} {:>9} {:>9} {:>13} {:>13}",
        "peer",
        "upload MB/s",
        "download MB/s",
        "rtt p50",
        "rtt p99",
        "new-conn p50",
        "new-conn p99"
    );
    for result in results {
        match &result.figures {
            Ok(f) => {
                let _ = writeln!(
                    out,
                    "{:<8} {:>12.0} {:>14.0} {:>9.1} {:>9.1} {:>13.1} {:>13.1}",
                    result.name,
                    f.upload_mbps,
                    f.download_mbps,
                    f.round_trip.p50,
                    f.round_trip.p99,
                    f.per_connection.p50,
                    f.per_connection.p99
                );
            }
            Err(why) => {
                let _ = writeln!(out, "{:<8} skipped: {why}", result.name);
            }
        }
    }
    let find = |name: &str| {
        results
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.figures.as_ref().ok())
    };
    let Some(cocoon) = find("cocoon") else {
        let _ = writeln!(out, "\nno ratios: cocoon was not measured");
        return out;
    };
    let _ = writeln!(
        out,
        "\nratios cocoon/peer (throughput: above 1 is faster; latency: below 1 is faster)"
    );
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>9} {:>8} {:>8} {:>13} {:>13}",
        "", "upload", "download", "rtt p50", "rtt p99", "new-conn p50", "new-conn p99"
    );
    for peer in ["direct", "haproxy", "nginx"] {
        let Some(p) = find(peer) else {
            let _ = writeln!(out, "cocoon/{peer:<9} skipped");
            continue;
        };
        let _ = writeln!(
            out,
            "{:<16} {:>8.2} {:>9.2} {:>8.2} {:>8.2} {:>13.2} {:>13.2}",
            format!("cocoon/{peer}"),
            cocoon.upload_mbps / p.upload_mbps,
            cocoon.download_mbps / p.download_mbps,
            cocoon.round_trip.p50 / p.round_trip.p50,
            cocoon.round_trip.p99 / p.round_trip.p99,
            cocoon.per_connection.p50 / p.per_connection.p50,
            cocoon.per_connection.p99 / p.per_connection.p99
        );
    }
    if let Some(direct) = find("direct") {
        let _ = writeln!(out, "\nadded latency over direct, µs (p50 / p99)");
        for result in results.iter().filter(|r| r.name != "direct") {
            if let Ok(f) = &result.figures {
                let _ = writeln!(
                    out,
                    "{:<8} round trip {:>7.1} / {:>7.1}   new connection {:>7.1} / {:>7.1}",
                    result.name,
                    f.round_trip.p50 - direct.round_trip.p50,
                    f.round_trip.p99 - direct.round_trip.p99,
                    f.per_connection.p50 - direct.per_connection.p50,
                    f.per_connection.p99 - direct.per_connection.p99
                );
            }
        }
    }
    out
}
