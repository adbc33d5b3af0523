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

/// Apimart, or anything that speaks its task protocol.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ImageGenerator: Send + Sync {
    /// Submits a generation; `idempotency_key` is stable for the task.
    async fn submit(
        &self,
        request: &GenerationRequest,
        idempotency_key: &str,
    ) -> Result<SubmitResponse, ApimartError>;

    /// Reads an upstream task's status.
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

    async fn status(&self, external_task_id: &str) -> Result<TaskStatusResponse, ApimartError> {
        self.get_task_status(external_task_id).await
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
}

/// Downloads result images.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ImageFetcher: Send + Sync {
    /// GETs `url`, reading at most `max_bytes`.
    async fn fetch(&self, url: &str, max_bytes: usize) -> Result<Bytes, FetchError>;
}

/// [`ImageFetcher`] over reqwest, with a whole-request timeout and a streamed size cap.
#[derive(Clone)]
pub struct HttpImageFetcher {
    client: reqwest::Client,
}

impl HttpImageFetcher {
    /// A fetcher whose requests time out after `timeout`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS backend failure).
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(HttpImageFetcher {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(10))
                .build()?,
        })
    }
}

#[async_trait]
impl ImageFetcher for HttpImageFetcher {
    async fn fetch(&self, url: &str, max_bytes: usize) -> Result<Bytes, FetchError> {
        let parsed = url::Url::parse(url).map_err(|e| FetchError::Permanent(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(FetchError::Permanent(format!(
                "unsupported scheme {}",
                parsed.scheme()
            )));
        }
        let resp = self.client.get(parsed).send().await.map_err(|e| {
            if e.is_timeout() || e.is_connect() {
                FetchError::Transient(e.without_url().to_string())
            } else {
                FetchError::Permanent(e.without_url().to_string())
            }
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
        let mut resp = resp;
        let mut body = BytesMut::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| FetchError::Transient(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > max_bytes {
                return Err(FetchError::TooLarge { max: max_bytes });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

/// Current time, injectable.
#[cfg_attr(test, mockall::automock)]
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
