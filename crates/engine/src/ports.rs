//! Seams of the engine that are not storage: the image generator (Apimart),
//! the result downloader and the clock. Each is a trait so the engine can be
//! tested with mocks; the real implementations are wired in `startup`.

use std::time::Duration;

use apimart_client::{
    ApimartClient, ApimartError, GenerationRequest, SubmitResponse, TaskStatusResponse,
};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;

/// Apimart, or anything that speaks its task protocol.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ImageGenerator: Send + Sync {
    /// Submits a generation; `idempotency_key` is stable for the task.
    async fn submit(
        &self,
        request: &GenerationRequest,
        idempotency_key: &str,
    ) -> Result<SubmitResponse, ApimartError>;

    /// Reads an upstream task's status, once: the engine schedules the next
    /// try itself when this fails.
    async fn status(&self, external_task_id: &str) -> Result<TaskStatusResponse, ApimartError>;
}

#[async_trait]
impl ImageGenerator for ApimartClient {
    async fn submit(
        &self,
        request: &GenerationRequest,
        idempotency_key: &str,
    ) -> Result<SubmitResponse, ApimartError> {
        self.submit_generation(request, Some(idempotency_key)).await
    }

    /// One attempt, no in-client retries: a failed poll becomes a durable
    /// snooze of the task (`next_run_at`), not sleeps holding a worker permit
    /// (crates/engine/src/decide.rs).
    async fn status(&self, external_task_id: &str) -> Result<TaskStatusResponse, ApimartError> {
        self.get_task_status_once(external_task_id).await
    }
}

/// Why a result image could not be downloaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL answered 404/410 or is otherwise gone for good.
    #[error("result image is gone (HTTP {0})")]
    Gone(u16),
    /// Larger than the cap.
    #[error("result image exceeds {max} bytes")]
    TooLarge {
        /// The cap, bytes.
        max: usize,
    },
    /// A failure worth retrying (timeout, 5xx, connection).
    #[error("download failed: {0}")]
    Transient(String),
    /// Any other failure (bad URL, 4xx).
    #[error("download failed: {0}")]
    Permanent(String),
    /// The URL, or a redirect it answered with, points where downloads may not go (an
    /// internal address not in `OUTBOUND_ALLOWLIST`, a scheme other than http(s)):
    /// nothing was sent there, and a retry cannot help.
    #[error("result image URL refused: {0}")]
    Refused(String),
}

/// A result image arriving in chunks ([`ImageFetcher::open`]).
pub type ImageChunks = BoxStream<'static, Result<Bytes, FetchError>>;

/// Downloads result images.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ImageFetcher: Send + Sync {
    /// GETs `url` and, once the response is accepted (2xx, announced length
    /// within `max_bytes`), hands back its body as it arrives, so a large
    /// image is never held whole. The stream yields [`FetchError::TooLarge`]
    /// as soon as more than `max_bytes` arrived, and [`FetchError::Transient`]
    /// when reading fails.
    async fn open(&self, url: &str, max_bytes: usize) -> Result<ImageChunks, FetchError>;
}

/// Reads a whole download into memory (tests and small images).
///
/// # Errors
/// Whatever the download or its stream yields.
pub async fn read_all(
    fetcher: &dyn ImageFetcher,
    url: &str,
    max_bytes: usize,
) -> Result<Bytes, FetchError> {
    let mut chunks = fetcher.open(url, max_bytes).await?;
    let mut body = BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        body.extend_from_slice(&chunk?);
    }
    Ok(body.freeze())
}

/// [`ImageFetcher`] over the outbound [`Fetcher`](modelgen_outbound::Fetcher): every hop
/// checked against the outbound policy and pinned to the checked address
/// (docs/outbound.md), a whole-download timeout, and a streamed size cap.
#[derive(Clone, Debug)]
pub struct HttpImageFetcher {
    fetcher: modelgen_outbound::Fetcher,
}

impl HttpImageFetcher {
    /// A fetcher whose downloads (redirects and body included) time out after `timeout`
    /// and may reach only what `policy` allows.
    pub fn new(timeout: Duration, policy: modelgen_outbound::OutboundPolicy) -> Self {
        HttpImageFetcher {
            fetcher: modelgen_outbound::Fetcher::new(
                policy,
                modelgen_outbound::FetcherConfig {
                    timeout,
                    connect_timeout: Duration::from_secs(10),
                    max_redirects: modelgen_outbound::DEFAULT_MAX_REDIRECTS,
                    user_agent: Some(concat!("modelgen/", env!("CARGO_PKG_VERSION")).into()),
                },
            ),
        }
    }

    /// Sends the GET (through the policy) and checks the status and announced length.
    async fn request(&self, url: &str, max_bytes: usize) -> Result<reqwest::Response, FetchError> {
        let resp = self.fetcher.get(url).await.map_err(|e| match e {
            modelgen_outbound::FetchError::Refused(why) => FetchError::Refused(why.to_string()),
            e if e.is_transient() => FetchError::Transient(e.to_string()),
            e => FetchError::Permanent(e.to_string()),
        })?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {}
            404 | 410 => return Err(FetchError::Gone(status)),
            408 | 429 | 500..=599 => return Err(FetchError::Transient(format!("HTTP {status}"))),
            _ => return Err(FetchError::Permanent(format!("HTTP {status}"))),
        }
        if resp.content_length().is_some_and(|l| l > max_bytes as u64) {
            return Err(FetchError::TooLarge { max: max_bytes });
        }
        Ok(resp)
    }
}

#[async_trait]
impl ImageFetcher for HttpImageFetcher {
    async fn open(&self, url: &str, max_bytes: usize) -> Result<ImageChunks, FetchError> {
        let resp = self.request(url, max_bytes).await?;
        let mut seen: usize = 0;
        let mut over = false;
        let chunks = resp.bytes_stream().map(move |chunk| {
            if over {
                return Err(FetchError::TooLarge { max: max_bytes });
            }
            let chunk = chunk.map_err(|e| FetchError::Transient(e.without_url().to_string()))?;
            seen = seen.saturating_add(chunk.len());
            if seen > max_bytes {
                over = true;
                return Err(FetchError::TooLarge { max: max_bytes });
            }
            Ok(chunk)
        });
        Ok(Box::pin(chunks))
    }
}

/// Current time, injectable.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// Now, UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A policy that lets the tests' loopback servers through.
    fn loopback() -> modelgen_outbound::OutboundPolicy {
        modelgen_outbound::OutboundPolicy::new(
            modelgen_outbound::Allowlist::parse("127.0.0.1/32").unwrap(),
        )
    }

    /// A one-shot HTTP server on loopback that answers with a chunked body of
    /// `body_len` bytes (no Content-Length), cut short after `cut_after` bytes
    /// when given. Returns its URL.
    async fn chunked_server(body_len: usize, cut_after: Option<usize>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/img.png", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            sock.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ntransfer-encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
            let mut sent = 0;
            while sent < body_len {
                if cut_after.is_some_and(|c| sent >= c) {
                    return; // drop the connection mid-body
                }
                let n = 500.min(body_len - sent);
                let chunk = format!("{n:x}\r\n{}\r\n", "x".repeat(n));
                if sock.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
                sent += n;
            }
            let _ = sock.write_all(b"0\r\n\r\n").await;
        });
        url
    }

    #[tokio::test]
    async fn the_stream_delivers_every_byte_under_the_cap() {
        let url = chunked_server(3000, None).await;
        let fetcher = HttpImageFetcher::new(Duration::from_secs(5), loopback());
        let body = read_all(&fetcher, &url, 3000).await.unwrap();
        assert_eq!(body.len(), 3000);
    }

    #[tokio::test]
    async fn the_cap_is_enforced_while_streaming_without_a_length() {
        let url = chunked_server(3000, None).await;
        let fetcher = HttpImageFetcher::new(Duration::from_secs(5), loopback());
        let err = read_all(&fetcher, &url, 1000).await.unwrap_err();
        assert_eq!(err, FetchError::TooLarge { max: 1000 });
    }

    #[tokio::test]
    async fn a_refused_address_is_refused_not_retried() {
        let url = chunked_server(3000, None).await;
        let fetcher = HttpImageFetcher::new(
            Duration::from_secs(5),
            modelgen_outbound::OutboundPolicy::default(),
        );
        let err = read_all(&fetcher, &url, 10_000).await.unwrap_err();
        assert!(
            matches!(&err, FetchError::Refused(why) if why.contains("loopback")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_body_cut_short_is_a_transient_failure() {
        let url = chunked_server(3000, Some(1000)).await;
        let fetcher = HttpImageFetcher::new(Duration::from_secs(5), loopback());
        let err = read_all(&fetcher, &url, 10_000).await.unwrap_err();
        assert!(matches!(err, FetchError::Transient(_)), "{err:?}");
    }
}
