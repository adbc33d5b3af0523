//! A real S3-compatible server for tests (feature `testing`): the `s3s-fs`
//! binary (crates.io, `cargo install s3s-fs --version 0.14.1 --features binary`)
//! on a loopback port, storing buckets as directories of a temporary folder.
//!
//! It speaks S3 over HTTP and checks AWS Signature V4 on every request
//! (header-signed and presigned), refuses anonymous requests and presigned
//! URLs past their `X-Amz-Expires`, and answers virtual-hosted-style requests
//! for `<bucket>.`[`S3_TEST_DOMAIN`]. Nothing about the S3 protocol is mocked.
//!
//! The binary is found at `MODELGEN_S3_SERVER_BIN`, else as `s3s-fs` on `PATH`,
//! else in `~/.cache/modelgen-tools/bin/` (where `.ci/run` installs it). A
//! missing binary fails the test loudly, unless `MODELGEN_SKIP_S3=1`.

#![expect(
    clippy::expect_used,
    reason = "test helper: a broken setup should stop the test loudly"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::blob::{Addressing, S3Settings};

/// Names the server binary.
pub const S3_SERVER_BIN_ENV: &str = "MODELGEN_S3_SERVER_BIN";
/// Set to `1` to skip the S3 tests (a machine without the server).
pub const SKIP_S3_ENV: &str = "MODELGEN_SKIP_S3";
/// The domain virtual-hosted requests use: `<bucket>.s3.test`, resolved to
/// loopback by [`LoopbackResolver`] (nothing leaves the machine).
pub const S3_TEST_DOMAIN: &str = "s3.test";
/// The version `.ci/run` installs (the newest that builds on our toolchain).
pub const S3S_FS_VERSION: &str = "0.14.1";

/// Whether `MODELGEN_SKIP_S3=1` asks to skip S3 tests.
pub fn s3_skipped() -> bool {
    std::env::var(SKIP_S3_ENV).is_ok_and(|v| v == "1")
}

/// Where the server binary is, if anywhere.
pub fn s3_server_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var(S3_SERVER_BIN_ENV) {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("s3s-fs"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = Path::new(&home).join(".cache/modelgen-tools/bin/s3s-fs");
        p.is_file().then_some(p)
    })
}

/// Resolves [`S3_TEST_DOMAIN`] and its sub-domains to 127.0.0.1, and nothing else.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopbackResolver;

impl object_store::client::DnsResolver for LoopbackResolver {
    fn resolve(&self, host: &str) -> object_store::client::DnsFuture {
        let ok = host == S3_TEST_DOMAIN || host.ends_with(&format!(".{S3_TEST_DOMAIN}"));
        let host = host.to_owned();
        Box::pin(async move {
            if ok {
                Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
            } else {
                Err(format!("{host} is not a test host").into())
            }
        })
    }
}

/// A running `s3s-fs`; killed when dropped.
pub struct S3TestServer {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
    /// Access key the server accepts.
    pub access_key: String,
    /// Its secret.
    pub secret_key: String,
}

impl std::fmt::Debug for S3TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3TestServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl S3TestServer {
    /// Starts a server with fresh credentials on a free loopback port and
    /// waits until it accepts connections.
    ///
    /// # Panics
    /// When the binary is missing (with the command that installs it) or the
    /// server does not come up within 20 s.
    pub fn start() -> S3TestServer {
        let bin = s3_server_bin().unwrap_or_else(|| {
            panic!(
                "the S3 test server is missing: install it with `cargo install s3s-fs --version {S3S_FS_VERSION} --features binary --locked` \
                 (or run .ci/run), point {S3_SERVER_BIN_ENV} at it, or set {SKIP_S3_ENV}=1 to skip S3 tests"
            )
        });
        let root = tempfile::Builder::new()
            .prefix("modelgen-s3-")
            .tempdir()
            .expect("temp dir for the S3 server");
        let access_key = format!("AK{}", ulid::Ulid::generate());
        let secret_key = format!("SK{}", ulid::Ulid::generate());
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                // s3s matches the Host header with its port.
                .args(["--domain", &format!("{S3_TEST_DOMAIN}:{port}")])
                .args(["--domain", S3_TEST_DOMAIN])
                .arg(root.path())
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let end = Instant::now() + Duration::from_secs(20);
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken in the meantime: try another
                }
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return S3TestServer {
                        child,
                        port,
                        root,
                        access_key,
                        secret_key,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the S3 test server ({}) did not come up", bin.display());
    }

    /// `http://127.0.0.1:PORT`, for path-style requests.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://s3.test:PORT`, for virtual-hosted requests (`bucket.s3.test`),
    /// reachable through [`LoopbackResolver`].
    pub fn domain_endpoint(&self) -> String {
        format!("http://{S3_TEST_DOMAIN}:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a bucket (a directory of the server's root) with a unique
    /// name starting with `stem`, and returns the name.
    pub fn create_bucket(&self, stem: &str) -> String {
        let name = format!(
            "{stem}-{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        std::fs::create_dir_all(self.root.path().join(&name)).expect("bucket directory");
        name
    }

    /// The directory holding `bucket`'s objects.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.path().join(bucket)
    }

    /// Settings that reach `bucket`/`prefix` on this server with its keys,
    /// path style through 127.0.0.1 or virtual-hosted through `bucket.s3.test`.
    pub fn settings(&self, bucket: &str, prefix: &str, addressing: Addressing) -> S3Settings {
        let mut s = S3Settings::from_url(&format!("s3://{bucket}/{prefix}")).expect("bucket URL");
        s.endpoint = Some(match addressing {
            Addressing::Path => self.endpoint(),
            Addressing::VirtualHosted => self.domain_endpoint(),
        });
        s.region = "us-east-1".into();
        s.access_key_id = Some(self.access_key.clone());
        s.secret_access_key = Some(self.secret_key.clone());
        s.addressing = addressing;
        s.allow_http = true;
        s.dns_resolver = Some(Arc::new(LoopbackResolver));
        s
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
