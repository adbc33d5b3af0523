//! The one HTTP fetcher for URLs the service did not choose (result images named by the
//! upstream): every hop is resolved once, judged by the [`OutboundPolicy`], and the
//! connection is pinned to the addresses that passed.
//!
//! Pinning: reqwest's own resolver would look the name up again when it connects, and a
//! name can answer differently the second time (DNS rebinding). So each hop gets a client
//! whose resolver override maps the host to exactly the checked addresses
//! (`ClientBuilder::resolve_to_addrs`); an IP-literal host is connected to as written,
//! which is the address checked. Redirects are followed here, not by reqwest, so each one
//! goes through the same check. Proxies from the environment are not used: a proxy
//! resolves names itself, out of the policy's reach.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::header::LOCATION;
use url::{Host, Url};

use crate::policy::{OutboundPolicy, RefusedAddress};

/// Most redirects followed for one fetch. A CDN may answer one or two; more is a loop or
/// an attempt to wander.
pub const DEFAULT_MAX_REDIRECTS: usize = 5;

/// Looks up the addresses of a host name (a seam, so tests can answer as a rebinding DNS
/// server would).
#[async_trait]
pub trait Resolve: Send + Sync {
    /// Every address of `host` for `port`.
    ///
    /// # Errors
    /// When the name cannot be resolved.
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system resolver (`getaddrinfo` on tokio's blocking pool, as reqwest's default).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// Why a URL (or a redirect it led to) may not be fetched. Never worth a retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Not an `http` or `https` URL.
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    /// Not a URL at all.
    #[error("not a valid URL: {0}")]
    InvalidUrl(String),
    /// No host to connect to.
    #[error("the URL has no host")]
    NoHost,
    /// The host is, or resolves only to, addresses the policy refuses.
    #[error("host {host}: {refused}")]
    Address {
        /// The host as written in the URL.
        host: String,
        /// The first address refused.
        refused: RefusedAddress,
    },
    /// Too many redirects.
    #[error("more than {max} redirects")]
    TooManyRedirects {
        /// The cap ([`FetcherConfig::max_redirects`]).
        max: usize,
    },
    /// A redirect without a usable `Location`.
    #[error("redirect (HTTP {status}) without a valid Location")]
    BadRedirect {
        /// The redirect's status.
        status: u16,
    },
    /// A redirect led to a refused URL.
    #[error("redirect {hop} refused: {cause}")]
    Redirect {
        /// Which redirect (1 = the first).
        hop: usize,
        /// Why its target was refused.
        cause: Box<Refusal>,
    },
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL, or a redirect, may not be fetched: nothing was sent to a refused address.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// The host name could not be resolved (may be temporary).
    #[error("cannot resolve {host}: {message}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        message: String,
    },
    /// The whole fetch, redirects included, took longer than its timeout.
    #[error("timed out")]
    Timeout,
    /// The HTTP exchange failed (connect, timeout, broken answer); the error carries no URL.
    #[error("{0}")]
    Http(#[source] reqwest::Error),
}

impl FetchError {
    /// Whether the failure may go away by itself (a timeout, a refused or reset
    /// connection, a DNS failure), as opposed to a refusal or a malformed answer.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Refused(_) => false,
            FetchError::Resolve { .. } | FetchError::Timeout => true,
            FetchError::Http(e) => e.is_timeout() || e.is_connect() || e.is_body(),
        }
    }
}

/// Settings of a [`Fetcher`].
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    /// The whole fetch: every hop, and reading the final body.
    pub timeout: Duration,
    /// Opening one connection.
    pub connect_timeout: Duration,
    /// Redirects followed at most (0: none).
    pub max_redirects: usize,
    /// `User-Agent` sent, if any.
    pub user_agent: Option<String>,
}

impl Default for FetcherConfig {
    fn default() -> Self {
        FetcherConfig {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_redirects: DEFAULT_MAX_REDIRECTS,
            user_agent: None,
        }
    }
}

/// Where one hop may connect: the host and the addresses that passed the policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pinned {
    /// The host name to pin, `None` for an IP literal (connected to as written).
    pub domain: Option<String>,
    /// The checked addresses, in resolver order.
    pub addrs: Vec<SocketAddr>,
}

/// How many pinned clients a [`Fetcher`] keeps (see [`Fetcher::client`]):
/// one per (host, checked addresses) seen lately; the set is emptied when it
/// is full, so a long tail of hosts costs no more than this many.
const PINNED_CLIENTS: usize = 64;

/// GETs URLs under an [`OutboundPolicy`]. Cheap to clone; clones share their
/// connections.
#[derive(Clone)]
pub struct Fetcher {
    policy: Arc<OutboundPolicy>,
    resolver: Arc<dyn Resolve>,
    config: FetcherConfig,
    clients: Arc<std::sync::Mutex<std::collections::HashMap<Pinned, reqwest::Client>>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("policy", &self.policy)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher with the system resolver.
    pub fn new(policy: OutboundPolicy, config: FetcherConfig) -> Fetcher {
        Fetcher {
            policy: Arc::new(policy),
            resolver: Arc::new(SystemResolver),
            config,
            clients: Arc::default(),
        }
    }

    /// The same fetcher, resolving names with `resolver`.
    #[must_use]
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Fetcher {
        self.resolver = resolver;
        self
    }

    /// The policy every hop is checked against.
    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    /// Checks one hop: the scheme, the host, and every address it resolves to (once).
    ///
    /// # Errors
    /// [`FetchError::Refused`] for a scheme other than http(s), no host, or a host whose
    /// addresses are all refused; [`FetchError::Resolve`] when the name does not resolve.
    pub async fn pin(&self, url: &Url) -> Result<Pinned, FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme(url.scheme().to_owned()).into());
        }
        let port = url.port_or_known_default().ok_or(Refusal::NoHost)?;
        let (domain, resolved) =
            match url.host() {
                None => return Err(Refusal::NoHost.into()),
                Some(Host::Ipv4(ip)) => (None, vec![SocketAddr::new(ip.into(), port)]),
                Some(Host::Ipv6(ip)) => (None, vec![SocketAddr::new(ip.into(), port)]),
                Some(Host::Domain(name)) => {
                    let addrs = self.resolver.resolve(name, port).await.map_err(|e| {
                        FetchError::Resolve {
                            host: name.to_owned(),
                            message: e.to_string(),
                        }
                    })?;
                    (Some(name.to_owned()), addrs)
                }
            };
        let host = url.host_str().unwrap_or_default().to_owned();
        let (addrs, refused) = self.policy.filter(resolved);
        if addrs.is_empty() {
            return Err(match refused {
                Some(refused) => Refusal::Address { host, refused }.into(),
                None => FetchError::Resolve {
                    host,
                    message: "no addresses".into(),
                },
            });
        }
        if let Some(refused) = refused {
            tracing::debug!(%host, refused = %refused.addr, "some addresses of the host were refused; using the others");
        }
        Ok(Pinned { domain, addrs })
    }

    /// GETs `url`, following up to [`FetcherConfig::max_redirects`] redirects, each hop
    /// checked and pinned ([`Self::pin`]). Returns the first answer that is not a
    /// redirect, whatever its status, with its body unread; the body must be read within
    /// the same timeout.
    ///
    /// # Errors
    /// [`FetchError`]: a refusal (of the URL or of any redirect), a resolver or HTTP
    /// failure, or the timeout.
    pub async fn get(&self, url: &str) -> Result<reqwest::Response, FetchError> {
        let deadline = Instant::now() + self.config.timeout;
        let mut url = Url::parse(url).map_err(|e| Refusal::InvalidUrl(e.to_string()))?;
        let mut hop = 0;
        loop {
            let pinned = self.pin(&url).await.map_err(|e| match e {
                FetchError::Refused(cause) if hop > 0 => FetchError::Refused(Refusal::Redirect {
                    hop,
                    cause: Box::new(cause),
                }),
                other => other,
            })?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(FetchError::Timeout);
            }
            let response = self
                .client(&pinned)?
                .get(url.clone())
                .timeout(remaining)
                .send()
                .await
                .map_err(|e| FetchError::Http(e.without_url()))?;
            let status = response.status();
            if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok(response);
            }
            if hop >= self.config.max_redirects {
                return Err(Refusal::TooManyRedirects {
                    max: self.config.max_redirects,
                }
                .into());
            }
            let next = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|location| url.join(location).ok())
                .ok_or(Refusal::BadRedirect {
                    status: status.as_u16(),
                })?;
            hop += 1;
            url = next;
        }
    }

    /// A client for one hop: no redirects, no proxy, the host pinned to
    /// `pinned.addrs` (so it can connect nowhere else, whatever DNS says
    /// later). Kept per `pinned` and reused: building one loads the root
    /// certificates, which cost more than a whole download of a small image,
    /// and a kept client keeps its connections alive for the next fetch from
    /// the same host. The caller bounds each request with its own timeout.
    fn client(&self, pinned: &Pinned) -> Result<reqwest::Client, FetchError> {
        if let Some(client) = self
            .clients
            .lock()
            .ok()
            .and_then(|clients| clients.get(pinned).cloned())
        {
            return Ok(client);
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.config.connect_timeout);
        if let Some(agent) = &self.config.user_agent {
            builder = builder.user_agent(agent.as_str());
        }
        if let Some(domain) = &pinned.domain {
            builder = builder.resolve_to_addrs(domain, &pinned.addrs);
        }
        let client = builder.build().map_err(FetchError::Http)?;
        if let Ok(mut clients) = self.clients.lock() {
            if clients.len() >= PINNED_CLIENTS {
                clients.clear();
            }
            clients.insert(pinned.clone(), client.clone());
        }
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;
    use crate::policy::{Allowlist, Forbidden};

    /// A resolver whose answers change with each lookup of a name, as a DNS server does
    /// in a rebinding attack: first a harmless address, then an internal one.
    struct Rebinding {
        answers: Mutex<HashMap<String, Vec<Vec<SocketAddr>>>>,
        lookups: AtomicUsize,
    }

    #[async_trait]
    impl Resolve for Rebinding {
        async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let mut answers = self.answers.lock().unwrap();
            let queue = answers
                .get_mut(host)
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "unknown name"))?;
            let next = if queue.len() > 1 {
                queue.remove(0)
            } else {
                queue[0].clone()
            };
            Ok(next
                .into_iter()
                .map(|a| SocketAddr::new(a.ip(), port))
                .collect())
        }
    }

    /// A loopback listener that counts connections and answers every request
    /// on each with `reply`, until the client closes it (a `reply` with
    /// `connection: close` gets one request per connection; one without
    /// keeps it alive, HTTP/1.1's default).
    async fn listener(ip: &str, reply: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
    /// [`OK`] without `connection: close`: the connection stays open.
    const OK_KEEP_ALIVE: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    fn fetcher(allow: &str) -> Fetcher {
        Fetcher::new(
            OutboundPolicy::new(Allowlist::parse(allow).unwrap()),
            FetcherConfig {
                timeout: Duration::from_secs(5),
                ..FetcherConfig::default()
            },
        )
    }

    #[tokio::test]
    async fn the_resolved_address_is_the_one_connected_to() {
        // The name first resolves to the allowed listener, then to the forbidden one.
        let (allowed, allowed_seen) = listener("127.0.0.1", OK).await;
        let forbidden_ip: SocketAddr =
            SocketAddr::new("127.0.0.2".parse().unwrap(), allowed.port());
        let forbidden = TcpListener::bind(forbidden_ip).await;
        let forbidden_seen = Arc::new(AtomicUsize::new(0));
        if let Ok(l) = forbidden {
            let counter = forbidden_seen.clone();
            tokio::spawn(async move {
                while let Ok(_conn) = l.accept().await {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        let resolver = Arc::new(Rebinding {
            answers: Mutex::new(HashMap::from([(
                "images.example".to_owned(),
                vec![vec![allowed], vec![forbidden_ip]],
            )])),
            lookups: AtomicUsize::new(0),
        });
        let f = fetcher(&allowed.to_string()).with_resolver(resolver.clone());
        let resp = f
            .get(&format!("http://images.example:{}/a.png", allowed.port()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "ok");
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1, "resolved once");
        assert_eq!(allowed_seen.load(Ordering::SeqCst), 1);
        assert_eq!(forbidden_seen.load(Ordering::SeqCst), 0);
        // The next fetch resolves to the forbidden address: refused before connecting.
        let err = f
            .get(&format!("http://images.example:{}/a.png", allowed.port()))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, FetchError::Refused(Refusal::Address { refused, .. }) if refused.addr == forbidden_ip && refused.why == Forbidden::Loopback),
            "{err:?}"
        );
        assert_eq!(forbidden_seen.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn fetches_from_one_pinned_host_share_a_connection_and_a_new_answer_gets_its_own() {
        let (first, first_seen) = listener("127.0.0.1", OK_KEEP_ALIVE).await;
        let (second, second_seen) = listener("127.0.0.3", OK_KEEP_ALIVE).await;
        // Two answers for the name: the first twice, then the second address.
        let resolver = Arc::new(Rebinding {
            answers: Mutex::new(HashMap::from([(
                "a.example".to_owned(),
                vec![vec![first], vec![first], vec![second]],
            )])),
            lookups: AtomicUsize::new(0),
        });
        let f = fetcher(&format!("{first},{second}")).with_resolver(resolver);
        let fetch = |port: u16| {
            let f = f.clone();
            async move {
                let resp = f
                    .get(&format!("http://a.example:{port}/x.png"))
                    .await
                    .unwrap();
                assert_eq!(resp.text().await.unwrap(), "ok");
            }
        };
        fetch(first.port()).await;
        fetch(first.port()).await;
        assert_eq!(
            first_seen.load(Ordering::SeqCst),
            1,
            "the second fetch reuses the kept connection"
        );
        // The name now resolves elsewhere (allowed too): a client pinned to
        // the new address, never the old connection to the old one.
        fetch(second.port()).await;
        assert_eq!(second_seen.load(Ordering::SeqCst), 1);
        assert_eq!(first_seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_name_with_mixed_answers_is_pinned_to_the_allowed_ones() {
        let resolver = Arc::new(Rebinding {
            answers: Mutex::new(HashMap::from([(
                "cdn.example".to_owned(),
                vec![vec![
                    "169.254.169.254:0".parse().unwrap(),
                    "93.184.216.34:0".parse().unwrap(),
                    "10.0.0.1:0".parse().unwrap(),
                ]],
            )])),
            lookups: AtomicUsize::new(0),
        });
        let f = fetcher("").with_resolver(resolver);
        let pinned = f
            .pin(&Url::parse("https://cdn.example/x.png").unwrap())
            .await
            .unwrap();
        assert_eq!(
            pinned,
            Pinned {
                domain: Some("cdn.example".into()),
                addrs: vec!["93.184.216.34:443".parse().unwrap()],
            }
        );
    }

    #[tokio::test]
    async fn refused_urls_are_never_connected_to() {
        let (forbidden, seen) = listener("127.0.0.1", OK).await;
        let f = fetcher("");
        for url in [
            format!("http://{forbidden}/x.png"),
            format!("http://[::ffff:127.0.0.1]:{}/x.png", forbidden.port()),
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "http://[::ffff:169.254.169.254]/latest/meta-data/".to_owned(),
            "http://[fe80::1]/".to_owned(),
            "http://0.0.0.0/".to_owned(),
        ] {
            let err = f.get(&url).await.unwrap_err();
            assert!(
                matches!(err, FetchError::Refused(Refusal::Address { .. })),
                "{url}: {err:?}"
            );
            assert!(!err.is_transient());
        }
        for (url, want) in [
            ("file:///etc/passwd", Refusal::Scheme("file".into())),
            ("gopher://127.0.0.1:70/", Refusal::Scheme("gopher".into())),
        ] {
            match f.get(url).await.unwrap_err() {
                FetchError::Refused(r) => assert_eq!(r, want),
                other => panic!("{url}: {other:?}"),
            }
        }
        assert!(matches!(
            f.get("not a url").await.unwrap_err(),
            FetchError::Refused(Refusal::InvalidUrl(_))
        ));
        assert_eq!(seen.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn every_redirect_is_checked_and_capped() {
        let (forbidden, forbidden_seen) = listener("127.0.0.1", OK).await;
        let to_forbidden: &'static str = Box::leak(
            format!("HTTP/1.1 302 Found\r\nlocation: http://{forbidden}/x.png\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .into_boxed_str(),
        );
        let (redirector, redirector_seen) = listener("127.0.0.1", to_forbidden).await;
        let f = fetcher(&redirector.to_string());
        let err = f
            .get(&format!("http://{redirector}/a.png"))
            .await
            .unwrap_err();
        match &err {
            FetchError::Refused(Refusal::Redirect { hop: 1, cause }) => {
                assert!(matches!(**cause, Refusal::Address { .. }), "{cause:?}")
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("redirect 1 refused"), "{err}");
        assert_eq!(redirector_seen.load(Ordering::SeqCst), 1);
        assert_eq!(forbidden_seen.load(Ordering::SeqCst), 0);

        // An allowed redirect is followed, up to the cap.
        let f = fetcher(&format!("{redirector},{forbidden}"));
        let resp = f.get(&format!("http://{redirector}/a.png")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(forbidden_seen.load(Ordering::SeqCst), 1);
        let (looping, _) = listener(
            "127.0.0.1",
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: /again\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        let f = fetcher(&looping.to_string());
        assert!(matches!(
            f.get(&format!("http://{looping}/")).await.unwrap_err(),
            FetchError::Refused(Refusal::TooManyRedirects {
                max: DEFAULT_MAX_REDIRECTS
            })
        ));
    }
}
