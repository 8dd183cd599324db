//! `mshare-lmdb serve` and `ask`, run on the build host: the guest kernel has no
//! networking (its tinyconfig leaves out CONFIG_NET, so no Unix sockets), so the server is
//! tested here, over a database in a plain file (the same code path as a region but for
//! the mapping underneath, which the guest tests cover).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn lmdb(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mshare-lmdb")).args(args).output().unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The server under test, stopped (SIGKILL) if a failed assertion leaves it running.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_server_answers_gets_and_scans_and_leaves_nothing_behind() {
    let dir = std::env::temp_dir().join(format!("mshare-lmdb-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("data");
    std::fs::File::create(&db).unwrap().set_len(8 << 20).unwrap();
    let (db, socket) = (db.display().to_string(), dir.join("sock").display().to_string());
    let loaded = lmdb(&["load", &db, "--generate", "2000"]);
    assert!(loaded.status.success(), "{}", text(&loaded));

    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_mshare-lmdb"))
            .args(["serve", &db, &socket, "3", "--snapshot"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while !std::path::Path::new(&socket).exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "the server never made its socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let get = lmdb(&["ask", &socket, "get", "k42"]);
    assert!(get.status.success(), "{}", text(&get));
    assert!(String::from_utf8_lossy(&get.stdout).starts_with("VALUE v42-g0-"), "{}", text(&get));
    let scan = lmdb(&["ask", &socket, "scan", "k42", "3"]);
    let lines: Vec<String> = String::from_utf8_lossy(&scan.stdout)
        .lines()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines, ["ENTRY k42", "ENTRY k420", "ENTRY k421", "END"], "{}", text(&scan));
    let missing = lmdb(&["ask", &socket, "get", "nope"]);
    assert_eq!(String::from_utf8_lossy(&missing.stdout).trim(), "NONE");
    let bad = lmdb(&["ask", &socket, "put", "k1", "x"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("unknown request 'put k1 x'"), "{}", text(&bad));

    // SAFETY: signalling the child we started.
    unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) };
    let status = server.0.wait().unwrap();
    let mut output = String::new();
    for pipe in [
        server.0.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read>),
        server.0.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut pipe = pipe;
        pipe.read_to_string(&mut output).unwrap();
    }
    assert!(status.success(), "{output}");
    assert!(output.contains("stopped serving"), "{output}");
    assert!(!std::path::Path::new(&socket).exists(), "the socket file was left behind");
    std::thread::sleep(Duration::from_millis(200));
    let workers = Command::new("pgrep").args(["-f", &format!("serve {db}")]).output().unwrap();
    assert!(String::from_utf8_lossy(&workers.stdout).trim().is_empty(), "workers left running");
    let unusable = lmdb(&["ask", &socket, "get", "k1"]);
    assert_eq!(unusable.status.code(), Some(1), "{}", text(&unusable));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_worker_that_dies_stops_the_server_with_an_error() {
    let dir = std::env::temp_dir().join(format!("mshare-lmdb-serve-dies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Not a database: every worker fails to open it and the server must say so.
    let db = dir.join("data");
    std::fs::write(&db, vec![0u8; 1 << 20]).unwrap();
    let socket = dir.join("sock");
    let out = lmdb(&["serve", &db.display().to_string(), &socket.display().to_string(), "2", "--snapshot"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("a worker died"), "{}", text(&out));
    assert!(!socket.exists(), "the socket file was left behind");
    let _ = std::fs::remove_dir_all(&dir);
}
