//! A real memcached in a namespace, and just enough of its text protocol to prove a client's
//! set/get works.

use std::{
    io::{self, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::netns::NetNs;

pub const PORT: u16 = 11211;

/// A memcached process inside a namespace, killed on drop.
pub struct Memcached {
    child: Child,
}

impl Memcached {
    /// Starts memcached on TCP 11211 (all addresses of the namespace) and, with `udp`, on UDP
    /// 11211 too (the 2018 amplification vector). Waits until it accepts connections.
    pub fn start(ns: &NetNs, udp: bool) -> Self {
        let child = ns
            .command("memcached")
            .args(["-u", "nobody", "-p", "11211", "-m", "64", "-c", "128"])
            .args(["-U", if udp { "11211" } else { "0" }])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start memcached (install it with `cargo xtask setup`)");
        let memcached = Memcached { child };
        let ready = ns.run(|| {
            let deadline = Instant::now() + Duration::from_secs(10);
            let addr: SocketAddr = ([127, 0, 0, 1], PORT).into();
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        assert!(ready, "memcached did not start listening within 10 s");
        memcached
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects to memcached at `server` (from the calling thread's namespace), stores `value`
/// under `key` and reads it back.
pub fn set_get(server: SocketAddr, key: &str, value: &[u8], timeout: Duration) -> io::Result<()> {
    let stream = TcpStream::connect_timeout(&server, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut request = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    request.extend_from_slice(value);
    request.extend_from_slice(b"\r\n");
    writer.write_all(&request)?;
    expect_line(&mut reader, "STORED")?;
    writer.write_all(format!("get {key}\r\n").as_bytes())?;
    expect_line(&mut reader, &format!("VALUE {key} 0 {}", value.len()))?;
    let mut data = vec![0; value.len() + 2];
    io::Read::read_exact(&mut reader, &mut data)?;
    if &data[..value.len()] != value {
        return Err(io::Error::other("memcached returned a different value"));
    }
    expect_line(&mut reader, "END")
}

fn expect_line(reader: &mut impl io::BufRead, want: &str) -> io::Result<()> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim_end() == want {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "memcached said {line:?}, expected {want:?}"
        )))
    }
}
